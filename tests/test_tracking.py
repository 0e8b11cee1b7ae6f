"""harness.tracking: store resolution, experiment layout, run writing, end statuses."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest_engine import make_cfg, mlflow_run, one_thread, store, synth, uri  # noqa: F401

from harness.tracking import NullTracker, RunTracker, configure, resolve_uri, status_for_exception


def test_resolve_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EABENCH_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_uri(tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("EABENCH_TRACKING_URI", "http://eabench:5000")
    assert resolve_uri(tmp_path) == "http://eabench:5000"
    assert resolve_uri(tmp_path, "sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_configure_puts_db_and_artifacts_under_root(store: Path) -> None:  # noqa: F811
    target = configure(store, uri(store))
    assert (Path(store) / "mlflow.db").is_file()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=target.uri).get_experiment(target.experiment_id)
    assert exp.name == "eabench"
    assert exp.artifact_location == (Path(store) / "artifacts").resolve().as_uri()
    assert configure(store, uri(store)).experiment_id == target.experiment_id  # idempotent


def test_run_tracker_child_run_params_and_status(store: Path) -> None:  # noqa: F811
    target = configure(store, uri(store))
    parent = RunTracker.start(target, run_name="study", tags={"eabench.kind": "study"})
    child = RunTracker.start(target, run_name="trial-0", tags={"variant": "meanP"},
                             parent_run_id=parent.run_id)
    child.log_params({"lr": 1e-4, "spec": {"a": 1}})
    child.log_params({"lr": 5.0, "extra": "x"})  # resume: an existing key is not re-sent
    child.log_metrics({"t2v/R1": 12.5}, step=0)
    child.log_metrics({"t2v/R1": 25.0}, step=1)
    child.log_json({"k": [1, 2]}, "sub/config.json")
    child.end("KILLED")
    run = mlflow_run(store, child.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params == {"lr": "0.0001", "spec": '{"a": 1}', "extra": "x"}
    assert run.data.metrics["t2v/R1"] == 25.0
    art = Path(run.info.artifact_uri[len("file://"):])
    assert (art / "sub" / "config.json").read_text().count("1") >= 1
    resumed = RunTracker.resume(target, child.run_id)
    assert mlflow_run(store, resumed.run_id).info.status == "RUNNING"
    resumed.end()
    assert mlflow_run(store, child.run_id).info.status == "FINISHED"


def test_status_for_exception() -> None:
    import optuna

    from harness.train import StopRun

    assert status_for_exception(None) == "FINISHED"
    assert status_for_exception(optuna.TrialPruned()) == "KILLED"
    assert status_for_exception(StopRun()) == "KILLED"
    assert status_for_exception(KeyboardInterrupt()) == "KILLED"
    assert status_for_exception(ValueError("x")) == "FAILED"
    null = NullTracker()
    null.log_metrics({"a": 1.0}, step=0)  # accepted and ignored
    null.end("FINISHED")


@pytest.mark.usefixtures("one_thread")
def test_pruned_training_run_is_killed(synth: Path, store: Path) -> None:  # noqa: F811
    import optuna

    from harness.train import run_training

    seen: list[tuple[int, float]] = []

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        seen.append((epoch, metrics["t2v/R1"]))
        raise optuna.TrialPruned()

    parent = RunTracker.start(configure(store, uri(store)), run_name="parent")
    with pytest.raises(optuna.TrialPruned):
        run_training(make_cfg(synth, store, variant="meanP", epochs=3), on_epoch=prune,
                     parent_run_id=parent.run_id, tags={"optuna.trial": "3"})
    assert [e for e, _ in seen] == [0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(store))
    runs = client.search_runs([configure(store, uri(store)).experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert runs[0].data.tags["optuna.trial"] == "3"
    assert runs[0].data.metrics["t2v/R1"] == seen[0][1]


def test_configure_does_not_leak_into_the_next_root(tmp_path: Path, store: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # mlflow.set_tracking_uri writes $MLFLOW_TRACKING_URI; configure must not let that pick the
    # store of a later configure(root) call in the same process.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("EABENCH_TRACKING_URI", raising=False)
    configure(store, uri(store))
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_mlflow_never_writes_run_urls_on_stdout_with_a_tracking_server() -> None:
    """With an http tracking URI MLflow prints "View run ... at: URL" on stdout when a run ends,
    which would corrupt `--json` output; importing harness.tracking switches that off. Checked
    against an unreachable server: without the switch MLflow tries to look the run up (and fails),
    with it it returns at once and prints nothing."""
    import subprocess
    import sys

    code = (
        "import io, contextlib, os\n"
        "from mlflow.tracking._tracking_service.client import TrackingServiceClient\n"
        "c = TrackingServiceClient('http://127.0.0.1:9')\n"
        "try:\n"
        "    c._log_url('0' * 32); print('NO-ERROR')\n"
        "except Exception:\n"
        "    print('TRIED')\n"
        "import harness.tracking\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    c._log_url('0' * 32)\n"
        "print('SILENT' if out.getvalue() == '' else 'PRINTED')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"}
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.split() == ["TRIED", "SILENT"], proc.stderr[-2000:]
