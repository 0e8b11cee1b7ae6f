"""Worker processes of a study and the sweeper of trials whose worker died.

Who runs a trial and whether that worker still lives is :mod:`studies.liveness`. At start-up
and between trials each worker sweeps: a RUNNING trial whose worker is dead (see
:func:`studies.liveness.is_stale`) is told FAIL and its cell is queued again with
:meth:`optuna.Study.enqueue_trial` carrying all its parameters.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.console import set_console
from studies.gpus import pin_gpus
from studies.liveness import DEFAULT_STALE_AFTER_S, HOST, is_stale, process_alive, worker_attrs
from studies.logs import setup_logging

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "HOST",
    "interrupt_on_sigterm",
    "is_stale",
    "process_alive",
    "run_processes",
    "set_worker_threads",
    "start_worker",
    "sweep_stale_trials",
    "trial_params",
    "worker_attrs",
    "worker_logs",
]

log = logging.getLogger("eabench.studies")


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
        key(trial_params(t))
        for t in trials
        if t.number not in stale_numbers
        and t.state in (TrialState.WAITING, TrialState.COMPLETE, TrialState.RUNNING)
        and trial_params(t)
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


def trial_params(t: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters; an enqueued (WAITING) trial has them only as ``fixed_params``."""
    return dict(t.params) if t.params else dict(t.system_attrs.get("fixed_params") or {})


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def set_worker_threads(n_workers: int) -> int:
    """Split this host's cores between ``n_workers`` processes (one torch thread pool each)."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, n_workers))
    torch.set_num_threads(threads)
    return threads


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> Any:
    """SIGTERM (kill, scancel, a SLURM time limit) ends this process as Ctrl-C does: the running
    trial's MLflow run ends KILLED with its ``last.pt`` kept, a torchrun job is stopped, and the
    trial's cell is queued again by the next run of the study. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def start_worker(index: int, n_workers: int, log_file: str | None, gpus: Sequence[int] | None = None) -> int:
    """Set up a spawned worker process: its GPUs, logging (to ``log_file`` if given), its thread share.

    ``gpus`` (indices among the launcher's visible devices) become this process's
    ``CUDA_VISIBLE_DEVICES`` before anything touches CUDA. With a live display in the launcher,
    workers write their logs to files instead of the terminal, so their lines do not tear through
    the leaderboard.
    """
    if gpus is not None:
        pin_gpus(gpus)
    interrupt_on_sigterm()
    if log_file:
        fh = open(log_file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
        set_console(Console(file=fh, force_terminal=False, width=120))
    setup_logging(prefix=f"w{index}")
    threads = set_worker_threads(n_workers)
    where = f", GPUs {','.join(map(str, gpus))} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})" \
        if gpus is not None else ""
    log.info("worker %d/%d started on %s, pid %d, %d torch threads%s", index + 1, n_workers, HOST, os.getpid(),
             threads, where)
    return threads


def run_processes(target: Callable[..., None], arg_tuples: list[tuple], names: list[str]) -> list[int | None]:
    """Start one spawned process per argument tuple, wait for all, return their exit codes.

    ``spawn`` (not fork): each worker starts clean, without the parent's threads, CUDA context or
    open database connections. Ctrl-C terminates the workers; their trials are swept on the next run.
    """
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
    folder = ctx.storage.path.parent if ctx.storage.kind == "journal" else Path(ctx.runs_root) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return [str(folder / f"{ctx.study_name}.w{i}.log") for i in range(n_workers)]
