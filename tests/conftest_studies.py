"""Study-test helpers (import explicitly): a small synthetic benchmark, one MLflow store per session,
study contexts with tiny training settings, and trainers for the worker tests.

The benchmark is the real generator's output (MSR-VTT layout, real videos) with a tiny CLIP
pre-trained for a few steps, so retrieval is above chance and a destroyed model is visibly worse
(the pruning test relies on that). Worker processes started with ``multiprocessing`` spawn
import this module by name (the tests folder is on ``sys.path`` in the parent and the children).
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

T = 4            # frames per video (= max_frames)
N_TRAIN = 32
N_TEST = 16
TRAIN_OPTIONS = (("epochs", 2), ("batch_size", 8), ("device", "cpu"), ("eval_batch_size", 64))


# Each test module that imports a fixture from here gets its own fixture definition, so a
# "session" fixture would run once per module; this cache makes it once per session for real.
_SESSION: dict[str, Path] = {}


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.synthetic import SyntheticConfig, generate_synthetic

    if "synth" not in _SESSION:
        root = tmp_path_factory.mktemp("studies_synth") / "synthetic"
        generate_synthetic(root, SyntheticConfig(num_train=N_TRAIN, num_test=N_TEST, frames=T, pretrain_clip=True,
                                                 pretrain_steps=30, seed=1), progress=False)
        _SESSION["synth"] = root
    return _SESSION["synth"]


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tracking root (SQLite + artifacts) for the session: MLflow's migrations run once."""
    from harness.tracking import configure

    if "store" not in _SESSION:
        root = tmp_path_factory.mktemp("studies_runs")
        configure(root, uri(root))
        _SESSION["store"] = root
    return _SESSION["store"]


def uri(store: Path) -> str:
    return f"sqlite:///{Path(store).resolve() / 'mlflow.db'}"


def make_ctx(synth: Path, store: Path, journal_dir: Path, *, kind: str = "table", storage: str | None = None,
             name: str | None = None, **kw: Any):
    from studies.context import StudyContext
    from studies.storage import resolve_storage

    name = name or f"{kind}-{uuid.uuid4().hex[:8]}"
    spec = resolve_storage(storage or str(journal_dir / f"{name}.journal"), name)
    base: dict[str, Any] = {
        "study_name": name, "kind": kind, "storage": spec, "dataset": "synthetic", "root": str(synth),
        "protocol": "frozen", "runs_root": str(store), "tracking_uri": uri(store),
        # pinned, not the preset's defaults: the pruning test tunes learning rates on this fixture
        "sets": (("max_frames", str(T)), ("expand_sentences", "false"), ("lr", "1e-3"), ("coef_lr", "0.1")),
        "train_options": TRAIN_OPTIONS,
    }
    base.update(kw)
    return StudyContext(**base)


def mlflow_client(store: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri(store))


def child_runs(store: Path, parent_run_id: str) -> list[Any]:
    client = mlflow_client(store)
    exp = client.get_experiment_by_name("eabench")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


# ------------------------------------------------------------------------------------ trainers
def slow_real_trainer(cfg: Any, **kw: Any) -> Any:
    """The real engine with a pause after each epoch, so two workers surely overlap in time."""
    from harness.train import run_training

    on_epoch = kw.pop("on_epoch", None)

    def slowed(epoch: int, metrics: dict) -> None:
        time.sleep(float(os.environ.get("EABENCH_TEST_EPOCH_PAUSE", "1.5")))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    return run_training(cfg, on_epoch=slowed, **kw)


@dataclass(frozen=True)
class FakeConfig:
    variant: str
    seed: int
    tracking_root: str
    tracking_uri: str | None


def fake_config(ctx: Any, variant: str, seed: int, overrides: dict) -> FakeConfig:
    return FakeConfig(variant, int(seed), ctx.runs_root, ctx.tracking_uri)


def fake_trainer(cfg: FakeConfig, *, on_epoch=None, parent_run_id=None, run_name=None, tags=None,
                 tracking_uri=None) -> Any:
    """Records a real MLflow child run; the call numbered $EABENCH_TEST_HANG_CALL (1-based) hangs.

    Used by the kill -9 test: the worker is killed while it hangs, which is a real mid-trial
    kill without needing a training run long enough to aim at. Every call appends
    ``variant seed pid`` to $EABENCH_TEST_CALLS, so the test sees which cells were trained when.
    """
    from harness.tracking import RunTracker, configure

    target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri)
    tracker = RunTracker.start(target, run_name=run_name, tags={**(tags or {}), "variant": cfg.variant,
                                                                "eabench.kind": "train"},
                               parent_run_id=parent_run_id)
    calls = Path(os.environ["EABENCH_TEST_CALLS"])
    with calls.open("a", encoding="utf-8") as fh:  # O_APPEND: a whole line, even with several writers
        fh.write(f"{cfg.variant} {cfg.seed} {os.getpid()}\n")
        fh.flush()
        end = fh.tell()  # where this line ends, so its number holds whoever appends next
    number = calls.read_bytes()[:end].count(b"\n")
    hang = str(number) == os.environ.get("EABENCH_TEST_HANG_CALL")
    r1 = float(10 + 10 * (sum(map(ord, cfg.variant)) % 7) + cfg.seed % 3)
    try:
        for epoch in range(2):
            if hang and epoch == 1:  # after epoch 0 was reported: a trial caught mid-training
                time.sleep(600)
            metrics = {"t2v/R1": r1 * (epoch + 1) / 2, "v2t/R1": r1 / 2}
            tracker.log_metrics(metrics, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    return SimpleNamespace(run_id=tracker.run_id, variant=cfg.variant, dataset="synthetic", protocol="frozen",
                           best_epoch=1, t2v={"R1": r1}, v2t={"R1": r1 / 2}, history=[])


def sleepy_trainer(cfg: FakeConfig, *, on_epoch=None, parent_run_id=None, run_name=None, tags=None,
                   tracking_uri=None) -> Any:
    """One 'epoch' that takes $EABENCH_TEST_EPOCH_SLEEP seconds and nothing else (no MLflow run):
    a slow epoch, or a first cache build, as the heartbeat sees it."""
    time.sleep(float(os.environ.get("EABENCH_TEST_EPOCH_SLEEP", "5")))
    r1 = float(10 + cfg.seed % 3)
    if on_epoch is not None:
        on_epoch(0, {"t2v/R1": r1, "v2t/R1": r1 / 2})
    return SimpleNamespace(run_id="none", variant=cfg.variant, dataset="synthetic", protocol="frozen",
                           best_epoch=0, t2v={"R1": r1}, v2t={"R1": r1 / 2}, history=[])


def paced_fake_trainer(cfg: FakeConfig, **kw: Any) -> Any:
    """fake_trainer, with $EABENCH_TEST_EPOCH_PAUSE seconds per epoch so that two workers overlap."""
    on_epoch = kw.pop("on_epoch", None)

    def paced(epoch: int, metrics: dict) -> None:
        time.sleep(float(os.environ.get("EABENCH_TEST_EPOCH_PAUSE", "1")))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    return fake_trainer(cfg, on_epoch=paced, **kw)


def checkpointing_fake_trainer(cfg: Any, *, on_epoch=None, parent_run_id=None, run_name=None, tags=None,
                               tracking_uri=None) -> Any:
    """For torchrun jobs (any TrainConfig): every rank appends its pid to $EABENCH_TEST_PIDS; rank 0
    starts a real MLflow child run and, like the engine, writes ``last.pt`` before reporting each
    of 3 epochs (1 s apart). Ends the run KILLED on an interrupt, as the engine does."""
    from harness.tracking import NullTracker, RunTracker, configure
    from harness.train import checkpoints as ckpt

    rank = int(os.environ.get("RANK", "0"))
    with open(os.environ["EABENCH_TEST_PIDS"], "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    tracker: Any = NullTracker()
    if rank == 0:
        target = configure(cfg.tracking_root, tracking_uri or cfg.tracking_uri, cfg.experiment)
        tracker = RunTracker.start(target, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
    last = ckpt.checkpoint_dir(cfg.tracking_root, tracker.run_id) / ckpt.LAST
    try:
        for epoch in range(3):
            time.sleep(1.0)
            if rank == 0:
                ckpt.save_atomic({"epoch": epoch}, last)
            if on_epoch is not None:
                on_epoch(epoch, {"t2v/R1": 10.0 + epoch, "v2t/R1": 5.0, "train/skipped_steps": 0.0})
    except BaseException:
        tracker.end("KILLED")
        raise
    tracker.end("FINISHED")
    return SimpleNamespace(run_id=tracker.run_id, variant=cfg.variant, dataset="synthetic", protocol="frozen",
                           best_epoch=2, t2v={"R1": 12.0}, v2t={"R1": 5.0}, history=[])


_CRASHED: set[tuple[str, int]] = set()


def crash_once_trainer(cfg: Any, *, resources: Any = None, **kw: Any) -> Any:
    """The real engine; the first call for each (variant, seed) fails right after its first epoch
    (``last.pt`` written, the run then ends FAILED), as a crash of the machine would leave it.
    Every call is recorded in ``crash_once_trainer.calls`` as (variant, seed, resume, epochs seen).
    With ``crash_once_trainer.damage = True`` the crash also truncates the run's ``last.pt``."""
    from harness.train import checkpoints as ckpt
    from harness.train import run_training

    on_epoch = kw.pop("on_epoch", None)
    cell = (cfg.variant, int(cfg.seed))
    crash = cell not in _CRASHED
    seen: list[int] = []
    crash_once_trainer.calls.append((cfg.variant, int(cfg.seed), cfg.resume, seen))

    def hook(epoch: int, metrics: dict) -> None:
        seen.append(int(epoch))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if crash:
            _CRASHED.add(cell)
            if crash_once_trainer.damage:
                tags = kw["tags"]
                client = mlflow_client(Path(cfg.tracking_root))
                runs = client.search_runs(
                    [client.get_experiment_by_name("eabench").experiment_id],
                    filter_string=f"tags.`optuna.study` = '{tags['optuna.study']}' and "
                                  f"tags.`optuna.trial` = '{tags['optuna.trial']}'")
                last = ckpt.checkpoint_dir(cfg.tracking_root, runs[0].info.run_id) / ckpt.LAST
                last.write_bytes(last.read_bytes()[:1000])
            raise RuntimeError("simulated crash after the first epoch")

    return run_training(cfg, on_epoch=hook, resources=resources, **kw)


crash_once_trainer.calls = []  # type: ignore[attr-defined]
crash_once_trainer.damage = False  # type: ignore[attr-defined]


@contextlib.contextmanager
def mlflow_server(workdir: Path, timeout_s: float = 120.0):
    """A real MLflow tracking server on loopback (SQLite backend, proxied artifacts under ``workdir``);
    yields its http URI and stops the whole process group afterwards."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "mlflow-server.log").open("wb")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{(workdir / 'server.db').resolve()}",
           "--artifacts-destination", str((workdir / "artifacts").resolve())]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                tail = (workdir / "mlflow-server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {tail}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
