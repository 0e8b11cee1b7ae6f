"""Worker bookkeeping: who runs a trial, whether that worker still lives, and the sweeper.

The journal storage has no heartbeat, so a worker killed with ``kill -9`` leaves its trial
RUNNING forever (STACK.md §1.7). Every trial therefore records the worker that runs it
(``worker_host``, ``worker_pid``) and refreshes ``heartbeat`` (a Unix time) after every epoch.
At start-up and between trials each worker sweeps: a RUNNING trial whose process is gone from
this host, or whose heartbeat on another host is older than ``stale_after_s``, is told FAIL and
its cell is queued again with :meth:`optuna.Study.enqueue_trial` carrying all its parameters.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "HOST",
    "is_stale",
    "process_alive",
    "run_processes",
    "set_worker_threads",
    "start_worker",
    "sweep_stale_trials",
    "worker_attrs",
    "worker_logs",
]

log = logging.getLogger("eabench.studies")

HOST = socket.gethostname()
# Other hosts: a trial whose heartbeat is this old is presumed dead. An epoch of the paper protocol
# on a slow GPU stays well below an hour; the heartbeat is refreshed after every epoch.
DEFAULT_STALE_AFTER_S = 2 * 3600.0


def worker_attrs() -> dict[str, Any]:
    """User attributes that identify the current process as the worker of a trial."""
    now = time.time()
    return {"worker_host": HOST, "worker_pid": os.getpid(), "heartbeat": now}


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (signal 0 probes without killing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (killed, not yet reaped by its parent) still answers signal 0; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _last_sign_of_life(trial: FrozenTrial) -> float:
    beat = trial.user_attrs.get("heartbeat")
    if isinstance(beat, (int, float)):
        return float(beat)
    if trial.datetime_start is not None:
        return trial.datetime_start.timestamp()
    return time.time()


def is_stale(trial: FrozenTrial, *, stale_after_s: float = DEFAULT_STALE_AFTER_S,
             now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker is dead (see module docstring)."""
    if trial.state != TrialState.RUNNING:
        return False
    now = time.time() if now is None else now
    host, pid = trial.user_attrs.get("worker_host"), trial.user_attrs.get("worker_pid")
    if host == HOST and isinstance(pid, int):
        if pid == os.getpid():
            return False
        return not process_alive(pid)
    return now - _last_sign_of_life(trial) > stale_after_s


@dataclass(frozen=True)
class SweptTrial:
    number: int
    params: dict[str, Any]
    mlflow_run_id: str | None


def sweep_stale_trials(
    study: optuna.Study,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    requeue: bool = True,
    cell_key: Callable[[Mapping[str, Any]], Any] | None = None,
    on_swept: Callable[[SweptTrial], None] | None = None,
) -> list[SweptTrial]:
    """Fail RUNNING trials of dead workers and queue their parameters again.

    ``cell_key`` maps params to the identity of a cell (table studies: (variant, seed)); a cell
    that already has a WAITING, COMPLETE or live RUNNING trial is not queued a second time.
    Search studies pass ``requeue=False``: a lost random draw need not be repeated.
    """
    trials = study.get_trials(deepcopy=False)
    stale = [t for t in trials if is_stale(t, stale_after_s=stale_after_s)]
    if not stale:
        return []
    key = cell_key or (lambda p: tuple(sorted(p.items())))
    stale_numbers = {t.number for t in stale}
    taken = {
        key(_params(t))
        for t in trials
        if t.number not in stale_numbers
        and t.state in (TrialState.WAITING, TrialState.COMPLETE, TrialState.RUNNING)
        and _params(t)
    }
    swept: list[SweptTrial] = []
    for t in stale:
        try:
            study._storage.set_trial_user_attr(t._trial_id, "swept_by", f"{HOST}:{os.getpid()}")
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except (RuntimeError, ValueError, optuna.exceptions.UpdateFinishedTrialError) as exc:
            # Another worker swept it first, or its owner finished it in the meantime.
            log.debug("sweep of trial %d skipped: %s", t.number, exc)
            continue
        item = SweptTrial(t.number, dict(t.params), t.user_attrs.get("mlflow_run_id"))
        swept.append(item)
        log.warning(
            "trial %d (%s) was left RUNNING by dead worker %s:%s; marked FAIL",
            t.number, _fmt_params(t.params), t.user_attrs.get("worker_host"), t.user_attrs.get("worker_pid"),
        )
        if requeue and t.params and key(t.params) not in taken:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            taken.add(key(t.params))
            log.info("queued %s again (retry of trial %d)", _fmt_params(t.params), t.number)
        if on_swept is not None:
            on_swept(item)
    return swept


def _params(t: FrozenTrial) -> dict[str, Any]:
    # Enqueued (WAITING) trials keep their parameters as the system attribute "fixed_params".
    return dict(t.params) if t.params else dict(t.system_attrs.get("fixed_params") or {})


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def set_worker_threads(n_workers: int) -> int:
    """Split this host's cores between ``n_workers`` processes (one torch thread pool each)."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, n_workers))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return threads


def start_worker(index: int, n_workers: int, log_file: str | None) -> int:
    """Set up a spawned worker process: logging (to ``log_file`` if given) and its thread share.

    With a live display in the launcher, workers write their logs to files instead of the
    terminal, so their lines do not tear through the leaderboard.
    """
    from studies.logs import setup_logging

    if log_file:
        from rich.console import Console

        from harness.console import set_console

        fh = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
        set_console(Console(file=fh, force_terminal=False, width=120))
    setup_logging(prefix=f"w{index}")
    threads = set_worker_threads(n_workers)
    log.info("worker %d/%d started on %s, pid %d, %d torch threads", index + 1, n_workers, HOST, os.getpid(),
             threads)
    return threads


def run_processes(target: Callable[..., None], arg_tuples: list[tuple], names: list[str]) -> list[int | None]:
    """Start one spawned process per argument tuple, wait for all, return their exit codes.

    ``spawn`` (not fork): each worker starts clean, without the parent's threads, CUDA context or
    open database connections. Ctrl-C terminates the workers; their trials are swept on the next run.
    """
    import multiprocessing as mp

    spawn = mp.get_context("spawn")
    procs = [spawn.Process(target=target, args=args, name=name) for args, name in zip(arg_tuples, names)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)
        raise
    bad = [p for p in procs if p.exitcode != 0]
    if bad:
        log.warning("%d worker(s) exited abnormally: %s", len(bad), ", ".join(f"{p.name}: {p.exitcode}" for p in bad))
    return [p.exitcode for p in procs]


def worker_logs(ctx: Any, n_workers: int) -> list[str]:
    """Log file paths of a study's workers, beside its journal (or under the runs folder)."""
    from pathlib import Path

    folder = ctx.storage.path.parent if ctx.storage.kind == "journal" else Path(ctx.runs_root) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return [str(folder / f"{ctx.study_name}.w{i}.log") for i in range(n_workers)]
