"""Fault injection on studies (issue 11): credentials never shown, skipped and diverged runs never
pass for clean ones, live trials never swept, dead ones never kept, pruned trials leave no last.pt."""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import optuna
import pytest
from conftest_studies import child_runs, make_ctx, mlflow_client, store, synth, uri  # noqa: F401
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from harness.errors import ConfigError
from studies.storage import StorageSpec, open_storage, resolve_storage
from studies.workers import is_stale, sweep_stale_trials

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SECRET = "s3cr3t-Pw"


# ------------------------------------------------------------------- 2. credentials never shown
def test_storage_and_tracking_uris_never_show_a_password(store: Path, tmp_path: Path,  # noqa: F811
                                                         capsys: pytest.CaptureFixture) -> None:
    from studies.cli import _finish
    from studies.context import ensure_parent_run

    query = resolve_storage(f"postgresql+psycopg2://bob@db:5432/optuna?sslpassword={SECRET}&password={SECRET}"
                            "&passfile=/home/bob/.pgpass", "s")
    assert SECRET not in query.display
    assert "passfile=/home/bob/.pgpass" in unquote(query.display) and "bob@db:5432/optuna" in query.display
    assert query.arg.count(SECRET) == 2  # what reopens the storage keeps the secret
    userinfo = resolve_storage(f"postgresql://bob:{SECRET}@db/optuna", "s")
    assert SECRET not in userinfo.display and "bob:" in userinfo.display

    # The MLflow parent run's tag optuna.storage (stored for every reader of the tracking store).
    ctx = make_ctx(Path("."), store, tmp_path, storage=query.arg)
    stub = SimpleNamespace(user_attrs={}, set_user_attr=lambda k, v: stub.user_attrs.__setitem__(k, v))
    run = mlflow_client(store).get_run(ensure_parent_run(ctx, stub))
    assert SECRET not in run.data.tags["optuna.storage"] and run.data.tags["optuna.storage"] == query.display

    # The error of a database that cannot be reached (port 1: refused at once).
    with pytest.raises(ConfigError) as err:
        open_storage(StorageSpec("rdb", url=f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:1/x?password={SECRET}"))
    assert SECRET not in str(err.value) and "127.0.0.1:1/x" in str(err.value)

    # The hints after a study: optuna-dashboard and the MLflow server (an http URI with userinfo).
    tracked = dataclasses.replace(ctx, tracking_uri=f"http://alice:{SECRET}@mlflow.example:5000")
    result = SimpleNamespace(to_json=lambda: {}, context=tracked)
    capsys.readouterr()
    _finish(argparse.Namespace(json=True), result)
    err_text = capsys.readouterr().err
    assert "optuna-dashboard" in err_text and "mlflow.example:5000" in err_text
    assert SECRET not in err_text


# ------------------------------------------------------------------- 4. skipped and diverged runs
# variant -> the loss calls (1-based, one per step for these loose heads) that are NaN; None: every call
_NAN_AT: dict[str, set[int] | None] = {"meanP": {2}, "meanP_A4": None}


def _nan_trainer(cfg, **kw):  # type: ignore[no-untyped-def]
    """The real engine with a non-finite loss injected as in tests/test_faults_engine.py."""
    from harness.train import model as model_module
    from harness.train import run_training

    real, calls, nan_at = model_module.symmetric_infonce, {"n": 0}, _NAN_AT[cfg.variant]

    def loss(logits):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        out = real(logits)
        return out * float("nan") if nan_at is None or calls["n"] in nan_at else out

    model_module.symmetric_infonce = loss
    try:
        return run_training(cfg, **kw)
    finally:
        model_module.symmetric_infonce = real


def test_skipped_steps_are_shown_and_a_diverged_run_is_never_a_complete_cell(synth: Path, store: Path,  # noqa: F811
                                                                            tmp_path: Path) -> None:
    from rich.console import Console

    from studies.leaderboard import leaderboard_rows, render_table
    from studies.table import run_table_study

    # 32 pairs / batch 8 = 4 steps; meanP: step 2 NaN (1 skipped, finishes); meanP_A4: every step NaN,
    # 2 in a row stop it (TrainingDiverged); each cell gets max_failures=2 tries.
    options = (("epochs", 1), ("batch_size", 8), ("device", "cpu"), ("eval_batch_size", 64),
               ("max_nonfinite_steps", 2))
    ctx = make_ctx(synth, store, tmp_path, trainer=_nan_trainer, train_options=options)
    result = run_table_study(ctx, ["meanP", "meanP_A4"], [42])

    by_variant: dict[str, list] = {}
    for t in result.trials:
        by_variant.setdefault(t.params["variant"], []).append(t)
    [ok] = by_variant["meanP"]
    assert ok.state == TrialState.COMPLETE and ok.user_attrs["skipped_steps"] == 1
    diverged = by_variant["meanP_A4"]
    assert [t.state for t in diverged] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.user_attrs["error"].startswith("TrainingDiverged: ") for t in diverged)
    assert result.coverage.complete == {("meanP", 42): ok.number}
    assert result.coverage.gave_up == [("meanP_A4", 42)] and result.coverage.missing == [("meanP_A4", 42)]

    rows = {r.variant: r for r in leaderboard_rows(result.trials) if r.state != "FAIL"}
    assert rows["meanP"].skipped_steps == 1 and rows["meanP"].to_dict()["skipped_steps"] == 1
    def table_cells(rows: list) -> tuple[list[str], list[list[str]]]:
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(render_table(rows))
        lines = console.export_text().splitlines()
        header = next([c.strip() for c in ln.split("┃")] for ln in lines if "variant" in ln)
        return header, [[c.strip() for c in ln.split("│")] for ln in lines if "│" in ln]

    header, body = table_cells(leaderboard_rows(result.trials))
    column = header.index("skipped")
    assert {(r[header.index("variant")], r[header.index("state")], r[column]) for r in body} == {
        ("meanP", "COMPLETE", "1"), ("meanP_A4", "FAIL", "")}
    # Without a skipped step anywhere, no column at all.
    header, _ = table_cells([r for r in leaderboard_rows(result.trials) if r.variant != "meanP"])
    assert "skipped" not in header

    runs = {r.data.tags["optuna.trial"]: r for r in child_runs(store, result.parent_run_id)}
    run = runs[str(ok.number)]
    assert run.info.status == "FINISHED" and run.data.metrics["train/skipped_steps"] == 1.0
    assert all(runs[str(t.number)].info.status == "FAILED" for t in diverged)
    assert mlflow_client(store).get_run(result.parent_run_id).info.status == "FAILED"


# ------------------------------------------------------------------- 5. a slow epoch is not death
def test_a_trial_in_a_long_epoch_is_not_swept_while_its_worker_lives(synth: Path, store: Path,  # noqa: F811
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An `eabench study table` worker trains one cell whose only epoch takes 8 s; this process plays
    another host (its own HOST differs from the worker's), so it can judge the trial by its
    heartbeat alone, and sweeps with --stale-after 2 s all through the epoch."""
    name, journal = "slowepoch", tmp_path / "slowepoch.journal"
    argv = [sys.executable, "-m", "harness.cli", "study", "table", "--variants", "meanP", "--root", str(synth),
            "--storage", str(journal), "--study-name", name, "--stale-after", "2",
            "--tracking-root", str(store), "--tracking-uri", uri(store), "--trainer", "conftest_studies:sleepy_trainer",
            "--config-factory", "conftest_studies:fake_config", "--gpus", "none", "--no-progress", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "CI": "true",
           "EABENCH_TEST_EPOCH_SLEEP": "8"}
    monkeypatch.setattr(sys.modules[is_stale.__module__], "HOST", "another-host")
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        study, running_since = None, None
        deadline = time.time() + 120
        while time.time() < deadline and worker.poll() is None:
            if study is None and journal.exists():
                study = optuna.load_study(study_name=name, storage=open_storage(resolve_storage(str(journal), name)))
            trials = study.get_trials(deepcopy=False) if study is not None else []
            if trials and trials[0].state == TrialState.RUNNING:
                running_since = running_since or time.time()
                assert sweep_stale_trials(study, stale_after_s=2.0) == [], "a live trial was swept"
            time.sleep(0.5)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err.decode()[-3000:]
    assert running_since is not None and time.time() - running_since > 4  # swept at least 2 stale periods
    [trial] = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and "swept_by" not in trial.user_attrs
    assert trial.user_attrs["heartbeat"] > trial.datetime_start.timestamp() + 4  # it kept beating


# ------------------------------------------------------------------- 6. a reused pid is not life
def _stat_start(pid: int) -> str:
    # field 22 of /proc/<pid>/stat (starttime): the 20th field after the ")" closing field 2 (comm)
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split(" ")[19]


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or not Path("/proc/sys/kernel/random/boot_id").exists(),
                    reason="needs Linux /proc")
def test_same_host_liveness_needs_boot_id_and_process_start_time() -> None:
    from studies.workers import HOST, worker_attrs

    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    dist = {"variant": CategoricalDistribution(["a"]), "seed": CategoricalDistribution([42])}

    def running(**attrs):  # type: ignore[no-untyped-def]
        return create_trial(params={"variant": "a", "seed": 42}, distributions=dist, state=TrialState.RUNNING,
                            user_attrs={"worker_host": HOST, "heartbeat": time.time(), **attrs})

    parent, me = os.getppid(), os.getpid()
    true_start = f"proc:{_stat_start(parent)}"
    wrong_start = f"proc:{int(_stat_start(parent)) + 1}"
    # A live pid of another process than the one recorded (reboot, container restart): dead.
    assert is_stale(running(worker_pid=parent, worker_boot_id=boot, worker_started=wrong_start))
    # (not the parent's start + 1: this process may well have started one clock tick after it)
    other_start = f"proc:{int(_stat_start(me)) + 100_000}"
    assert is_stale(running(worker_pid=me, worker_boot_id=boot, worker_started=other_start))
    # The recorded process itself: alive.
    assert not is_stale(running(worker_pid=parent, worker_boot_id=boot, worker_started=true_start))
    # Another boot of this host: dead, whatever the pid.
    assert is_stale(running(worker_pid=parent, worker_boot_id="0" * 8 + boot[8:], worker_started=true_start))
    # What a worker records about itself is what the judgement compares.
    mine = worker_attrs()
    assert mine["worker_boot_id"] == boot and mine["worker_started"] == f"proc:{_stat_start(me)}"
    assert not is_stale(running(**mine))


# ------------------------------------------------------------------- 7. last.pt of pruned trials
class _PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


def _fail_trial_two(cfg, *, on_epoch, tags, **kw):  # type: ignore[no-untyped-def]
    """The real engine; trial 2 fails after its first epoch (a disk full, a bug in a callback)."""
    from harness.train import run_training

    def hook(epoch: int, metrics: dict) -> None:
        on_epoch(epoch, metrics)
        if tags["optuna.trial"] == "2":
            raise RuntimeError("no space left on device")

    return run_training(cfg, on_epoch=hook, tags=tags, **kw)


def test_pruned_search_trial_leaves_no_last_pt_but_a_failed_one_keeps_it_resumable(
        synth: Path, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from harness.train import TrainConfig, run_training
    from harness.train.checkpoints import LAST, checkpoint_dir
    from studies import search
    from studies.space import SearchSpace

    monkeypatch.setattr(search, "make_pruner", lambda settings: _PruneTrialOne())
    space = SearchSpace(designs=("meanP",), fixed=(("warmup_proportion", 0.0),))
    settings = search.SearchSettings(space=space, n_trials=3, n_startup_trials=1, seed=42)
    ctx = make_ctx(synth, store, tmp_path, kind="search", trainer=_fail_trial_two)
    result = search.run_search_study(ctx, settings)

    states = {t.number: t.state for t in result.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED, 2: TrialState.FAIL}
    runs = {r.data.tags["optuna.trial"]: r for r in child_runs(store, result.parent_run_id)}
    assert {n: runs[n].info.status for n in "012"} == {"0": "FINISHED", "1": "KILLED", "2": "FAILED"}

    def last(n: str) -> Path:
        return checkpoint_dir(store, runs[n].info.run_id) / LAST

    assert not last("1").exists() and last("1").parent.is_dir()  # the run had written one
    assert last("2").exists()
    # Resumable: the failed run continues from its last epoch to the end.
    resumed = run_training(TrainConfig(variant="", resume=runs["2"].info.run_id, tracking_root=str(store),
                                       tracking_uri=uri(store), progress=False, device="cpu"))
    assert resumed.run_id == runs["2"].info.run_id and len(resumed.history) == 2
