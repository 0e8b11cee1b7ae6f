"""A trial trained by K processes: the worker runs it as a torchrun job and follows it.

``run_torchrun_trial`` has ``run_training``'s signature (plus ``nproc``), so a trial does not care
whether it trains in the worker process or in a job. It writes a spec (the ``TrainConfig`` as a
dict, the trainer, the MLflow parent run, run name and tags) into the trial's job folder and
starts::

    python -m torch.distributed.run --standalone --nproc-per-node K -m studies.job SPEC.json

in a session of its own (so the whole job can be signalled as one group), with the worker's GPUs
(``CUDA_VISIBLE_DEVICES``) and ``OMP_NUM_THREADS`` = the worker's threads / K. While it runs, the
worker tails the job's per-epoch lines and calls ``on_epoch`` with them (leaderboard, pruning).
When ``on_epoch`` raises (``optuna.TrialPruned``) or the worker is interrupted, the job is
stopped (SIGTERM to its group, SIGKILL after ``term_timeout_s``); a pruned trial's ``last.pt`` is
deleted, as the engine does in-process. At the end the job's result file becomes a
``TrainResult``; a job's error is raised again in the worker (a diverged run stays
``TrainingDiverged``), so a failed job fails its trial.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.errors import ConfigError
from harness.train import TrainConfig, TrainingDiverged, TrainResult
from harness.train import checkpoints as ckpt
from harness.train.schema import TAG_STUDY, TAG_TRIAL
from studies.liveness import process_start_time

__all__ = ["TorchrunJobError", "job_command", "run_torchrun_trial", "trainer_ref"]

log = logging.getLogger("eabench.studies")

_RAISE_AS: dict[str, type[Exception]] = {"TrainingDiverged": TrainingDiverged, "ConfigError": ConfigError}


class TorchrunJobError(RuntimeError):
    """A torchrun job ended without a result (crashed, killed, or an error of another kind)."""


def trainer_ref(trainer: Any) -> str:
    """``module:function`` of a trainer, so the job's processes can import it."""
    if isinstance(trainer, str):
        return trainer
    module, name = getattr(trainer, "__module__", None), getattr(trainer, "__qualname__", "")
    if not module or "<" in name or module == "__main__":
        raise ConfigError(f"--nproc-per-trial > 1 needs a trainer importable as module:function, not {trainer!r}")
    return f"{module}:{name}"


def job_command(spec: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "studies.job", str(spec)]


def _job_env(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    # The worker's share of the cores, split between its K processes (torchrun would force 1).
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // nproc))
    env["EABENCH_NO_PROGRESS"] = "1"
    # The job imports the trainer and the config factory's modules as the worker does.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
    return env


def _stop(proc: subprocess.Popen, term_timeout_s: float) -> None:
    """SIGTERM to the job's process group (the agent passes it on to every rank), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, term_timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _Tail:
    """New complete lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [ln for ln in data[:end].decode("utf-8").splitlines() if ln.strip()]


def _drop_last_checkpoints(cfg: TrainConfig, tags: dict[str, Any], tracking_uri: str | None) -> None:
    """A pruned job's runs: KILLED in MLflow, ``last.pt`` deleted (a pruned trial is never resumed)."""
    study, trial = tags.get(TAG_STUDY), tags.get(TAG_TRIAL)
    if study is None or trial is None:
        return
    try:
        from mlflow.tracking import MlflowClient

        from harness.tracking import configure

        target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri, cfg.experiment)
        client = MlflowClient(tracking_uri=target.uri)
        runs = client.search_runs([target.experiment_id],
                                  filter_string=f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_TRIAL}` = '{trial}'")
        for run in runs:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
            folder = ckpt.checkpoint_dir(cfg.tracking_root, run.info.run_id)
            for f in [folder / ckpt.LAST, *folder.glob(f"{ckpt.LAST}.tmp*")]:
                f.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - cleanup of a pruned trial must not fail the study
        log.warning("could not clean up the pruned job of trial %s: %s", trial, exc)


def run_torchrun_trial(cfg: TrainConfig, *, nproc: int, trainer: Any, workdir: Path,
                       on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                       parent_run_id: str | None = None, run_name: str | None = None,
                       tags: dict[str, Any] | None = None, tracking_uri: str | None = None,
                       poll_s: float = 0.5, term_timeout_s: float = 60.0) -> TrainResult:
    """Train ``cfg`` with ``nproc`` processes (torchrun) and return its result (see module docstring)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"--nproc-per-trial {nproc} needs the engine's TrainConfig, not {type(cfg).__name__}")
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {name: workdir / name for name in ("spec.json", "epochs.jsonl", "result.json", "job.log")}
    for name in ("epochs.jsonl", "result.json"):
        paths[name].unlink(missing_ok=True)  # a retried trial gets the same folder
    tags = dict(tags or {})
    spec = json.dumps({
        "config": cfg.to_dict(), "trainer": trainer_ref(trainer), "parent_run_id": parent_run_id,
        "run_name": run_name, "tags": tags, "tracking_uri": tracking_uri,
        "epochs": str(paths["epochs.jsonl"]), "result": str(paths["result.json"]),
        "owner_pid": os.getpid(), "owner_started": process_start_time(os.getpid()),
    }, indent=2)
    # Owner-only: the tracking URI may carry a password.
    fd = os.open(paths["spec.json"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(spec)
    log.info("%s: torchrun job of %d processes, log %s", run_name or cfg.variant, nproc, paths["job.log"])
    tail = _Tail(paths["epochs.jsonl"])
    with paths["job.log"].open("ab") as out:
        proc = subprocess.Popen(job_command(paths["spec.json"], nproc), env=_job_env(nproc), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pruned = False
    try:
        while True:
            rc = proc.poll()
            for line in tail.lines():  # after poll: every line written before the exit is read
                row = json.loads(line)
                if on_epoch is not None:
                    on_epoch(int(row["epoch"]), row["metrics"])
            if rc is not None:
                break
            time.sleep(poll_s)
    except BaseException as exc:
        pruned = any(c.__name__ == "TrialPruned" for c in type(exc).__mro__)
        _stop(proc, term_timeout_s)
        raise
    finally:
        if proc.poll() is None:
            _stop(proc, term_timeout_s)
        if pruned:
            _drop_last_checkpoints(cfg, tags, tracking_uri)
    return _result(paths, rc)


def _result(paths: dict[str, Path], rc: int) -> TrainResult:
    try:
        out = json.loads(paths["result.json"].read_text())
    except (OSError, ValueError):
        log_tail = _log_tail(paths["job.log"])
        raise TorchrunJobError(f"torchrun job exited with code {rc} without a result; "
                               f"its log {paths['job.log']} ends:\n{log_tail}") from None
    if not out.get("ok"):
        kind = _RAISE_AS.get(str(out.get("type")), TorchrunJobError)
        raise kind(f"{out.get('type')}: {out.get('error')}" if kind is TorchrunJobError else str(out.get("error")))
    data = dict(out["result"])
    known = set(TrainResult.__dataclass_fields__)
    return TrainResult(**{k: v for k, v in data.items() if k in known})


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
