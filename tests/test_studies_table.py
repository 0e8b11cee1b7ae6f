"""Paper-table studies on the synthetic benchmark: one worker, two workers, kill -9 and resume, PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest_studies import (  # noqa: F401
    child_runs,
    make_ctx,
    mlflow_client,
    mlflow_server,
    slow_real_trainer,
    store,
    synth,
    uri,
)
from optuna.trial import TrialState

from studies.grid import table_cells
from studies.storage import open_storage, resolve_storage
from studies.table import run_table_study

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _complete_cells(trials: list[optuna.trial.FrozenTrial]) -> Counter:
    return Counter((t.params["variant"], int(t.params["seed"])) for t in trials if t.state == TrialState.COMPLETE)


def test_three_variant_table_study_runs_three_children_under_one_parent(synth: Path, store: Path,
                                                                        tmp_path: Path) -> None:
    variants = ["meanP", "meanP_E4", "meanP_A1-4"]
    ctx = make_ctx(synth, store, tmp_path, table="meanP")
    result = run_table_study(ctx, variants, [42])

    trials = result.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["variant"] for t in trials) == sorted(variants)
    assert result.coverage.missing == [] and result.coverage.duplicates == {}

    client = mlflow_client(store)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["eabench.kind"] == "study"
    assert parent.data.tags["optuna.study"] == ctx.study_name
    assert parent.data.tags["paper_table"] == "meanP" and parent.data.tags["protocol"] == "frozen"
    children = child_runs(store, result.parent_run_id)
    assert len(children) == 3
    # Each trial's stored run id is one of the children, with matching variant and trial tags.
    by_id = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["variant"] == t.params["variant"]
        assert run.data.tags["optuna.trial"] == str(t.number)
        # The objective is the best epoch's T2V R@1, the same number MLflow holds.
        assert t.value == pytest.approx(run.data.metrics["best/t2v/R1"])
    # The study remembers its parent; a rerun resumes it and trains nothing again.
    again = run_table_study(ctx, variants, [42])
    assert again.parent_run_id == result.parent_run_id
    assert len(again.trials) == 3 and len(child_runs(store, result.parent_run_id)) == 3


def _two_worker_study(synth: Path, store: Path, tmp_path: Path, storage: str | None,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Real engine, paused 1 s after each epoch so that both workers are busy at the same time.
    monkeypatch.setenv("EABENCH_TEST_EPOCH_PAUSE", "1")
    variants, seeds = ["meanP", "meanP_A4"], [42, 43]
    ctx = make_ctx(synth, store, tmp_path, storage=storage, trainer=slow_real_trainer)
    result = run_table_study(ctx, variants, seeds, workers=2)

    trials = result.trials
    complete = _complete_cells(trials)
    assert set(complete) == set(table_cells(variants, seeds))
    assert all(n == 1 for n in complete.values()), complete       # every cell exactly once
    pids = {t.user_attrs["worker_pid"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(pids) == 2 and os.getpid() not in pids              # both workers trained, the launcher did not
    assert len(child_runs(store, result.parent_run_id)) == sum(t.state == TrialState.COMPLETE for t in trials)


def test_two_workers_cover_the_grid_exactly_once(synth: Path, store: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _two_worker_study(synth, store, tmp_path, None, monkeypatch)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("EABENCH_PG_URL"), reason="EABENCH_PG_URL not set (.ci/postgres.sh sets it)")
def test_two_workers_on_postgresql(synth: Path, store: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _two_worker_study(synth, store, tmp_path, os.environ["EABENCH_PG_URL"], monkeypatch)


def _study_state(journal: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(resolve_storage(str(journal), name))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_kill_9_mid_trial_then_rerun_completes_each_cell_once(synth: Path, store: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Fake trainer (conftest_studies.fake_trainer): it writes real MLflow child runs and hangs in
    its second call after epoch 0, so the worker can be killed mid-trial at a known point; a real
    training run is too short to aim a kill at. The killed worker is an `eabench study table`
    process; the rerun is the same command, run in this process (saves a second start-up)."""
    name = "killtest"
    journal = tmp_path / f"{name}.journal"
    calls = tmp_path / "calls.txt"
    variants = ["meanP", "meanP_E4", "meanP_A4"]
    argv = [sys.executable, "-m", "harness.cli", "study", "table", "--variants", ",".join(variants),
            "--root", str(synth), "--storage", str(journal), "--study-name", name,
            "--tracking-root", str(store), "--tracking-uri", uri(store),
            "--trainer", "conftest_studies:fake_trainer", "--config-factory", "conftest_studies:fake_config",
            "--gpus", "none", "--no-progress", "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "CI": "true",
           "EABENCH_TEST_CALLS": str(calls), "EABENCH_TEST_HANG_CALL": "2"}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until trial 2 reported epoch 0 and hangs
            if journal.exists():
                trials = _study_state(journal, name)
                if any(t.state == TrialState.RUNNING and t.user_attrs.get("last_epoch") == 0 for t in trials):
                    break
            assert first.poll() is None, first.communicate()[1].decode()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the worker never reached its hanging trial")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = _study_state(journal, name)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    finished_cell = (before[0].params["variant"], before[0].params["seed"])
    killed_cell = (before[1].params["variant"], before[1].params["seed"])

    from harness.cli import main

    monkeypatch.setenv("EABENCH_TEST_CALLS", str(calls))
    monkeypatch.delenv("EABENCH_TEST_HANG_CALL", raising=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(argv[3:]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["coverage"]["missing"] == [] and out["coverage"]["duplicates"] == {}

    after = _study_state(journal, name)
    complete = _complete_cells(after)
    assert set(complete) == set(table_cells(variants, [42])) and set(complete.values()) == {1}
    assert after[0].state == TrialState.COMPLETE and after[0].datetime_complete == before[0].datetime_complete
    assert after[1].state == TrialState.FAIL and "swept_by" in after[1].user_attrs
    retry = [t for t in after if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert (retry[0].params["variant"], retry[0].params["seed"]) == killed_cell

    trained = Counter(tuple(line.split()[:2]) for line in calls.read_text().splitlines())
    assert trained[(finished_cell[0], str(finished_cell[1]))] == 1      # a finished trial is never re-run
    assert trained[(killed_cell[0], str(killed_cell[1]))] == 2          # killed once, retried once
    assert sum(trained.values()) == 4

    # The killed trial's MLflow run does not stay RUNNING forever.
    client = mlflow_client(store)
    exp = client.get_experiment_by_name("eabench")
    killed_runs = client.search_runs([exp.experiment_id],
                                     f"tags.`optuna.study` = '{name}' and tags.`optuna.trial` = '1'")
    assert [r.info.status for r in killed_runs] == ["FAILED"]


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("EABENCH_PG_URL"), reason="EABENCH_PG_URL not set (.ci/postgres.sh sets it)")
def test_two_hosts_share_one_postgresql_study_and_one_mlflow_server(synth: Path, store: Path,
                                                                    tmp_path: Path) -> None:
    """docs/STUDIES.md's multi-host recipe: the same `eabench study table` command on two "hosts"
    (EABENCH_WORKER_HOST=host-a / host-b, started together) with one PostgreSQL storage and one
    MLflow tracking server (`mlflow server`, artifacts proxied). The second training call hangs
    after its first epoch; its host is killed there, and the other host finds the trial dead by its
    heartbeat alone (another host name: no pid check) after --stale-after 3 s and trains the cell
    again. Every cell ends with exactly one
    COMPLETE trial, all runs are children of one parent run."""
    with mlflow_server(tmp_path / "mlflow") as server:
        _two_hosts(synth, store, tmp_path, server)


def _two_hosts(synth: Path, store: Path, tmp_path: Path, server: str) -> None:
    name = f"hosts-{time.time_ns()}"
    calls = tmp_path / "calls.txt"
    variants = ["meanP", "meanP_E4", "meanP_A4", "meanP_E4_A4"]
    argv = [sys.executable, "-m", "harness.cli", "study", "table", "--variants", ",".join(variants),
            "--root", str(synth), "--storage", os.environ["EABENCH_PG_URL"], "--study-name", name,
            "--stale-after", "3", "--tracking-root", str(store), "--tracking-uri", server,
            "--trainer", "conftest_studies:paced_fake_trainer", "--config-factory", "conftest_studies:fake_config",
            "--gpus", "none", "--no-progress", "--json"]
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "CI": "true",
            "EABENCH_TEST_CALLS": str(calls), "EABENCH_TEST_HANG_CALL": "2", "EABENCH_TEST_EPOCH_PAUSE": "1"}
    hosts = {h: subprocess.Popen(argv, env={**base, "EABENCH_WORKER_HOST": h}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=tmp_path) for h in ("host-a", "host-b")}
    storage = open_storage(resolve_storage(os.environ["EABENCH_PG_URL"], name))
    killed = None
    try:
        deadline = time.time() + 240
        while killed is None:  # the hanging trial: kill its host
            assert time.time() < deadline, "no trial ever hung"
            try:
                trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                trials = []
            hung = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("last_epoch") == 0
                    and len(calls.read_text().splitlines()) >= 2 and
                    calls.read_text().splitlines()[1].split()[2] == str(t.user_attrs.get("worker_pid"))]
            if hung:
                killed = hung[0]
                host = killed.user_attrs["worker_host"]
                os.kill(hosts[host].pid, signal.SIGKILL)
            time.sleep(0.3)
        survivor = next(h for h in hosts if h != host)
        out, err = hosts[survivor].communicate(timeout=240)
        assert hosts[survivor].returncode == 0, err.decode()[-3000:]
    finally:
        for p in hosts.values():
            if p.poll() is None:
                p.kill()
            p.communicate()
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = _complete_cells(trials)
    assert set(complete) == set(table_cells(variants, [42])) and set(complete.values()) == {1}
    assert {t.user_attrs["worker_host"] for t in trials if t.state == TrialState.COMPLETE} <= {"host-a", "host-b"}
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == TrialState.FAIL and dead.user_attrs["swept_by"].startswith(f"{survivor}:")
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["worker_host"] == survivor
    summary = json.loads(out)
    assert summary["coverage"]["missing"] == [] and summary["storage"].startswith("postgresql")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    exp = client.get_experiment_by_name("eabench")
    parents = client.search_runs([exp.experiment_id], f"tags.`optuna.study` = '{name}' and "
                                                      "tags.`eabench.kind` = 'study'")
    assert [p.info.run_id for p in parents] == [study.user_attrs["mlflow_parent_run_id"]]
    runs = client.search_runs([exp.experiment_id], f"tags.`optuna.study` = '{name}' and tags.variant != ''")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert sorted(r.info.status for r in runs) == ["FAILED"] + ["FINISHED"] * len(variants)
    # the study's summary artifacts went through the server's artifact proxy
    assert "leaderboard.json" in {f.path for f in client.list_artifacts(parents[0].info.run_id)}
