"""A retried table-study trial continues its failed predecessor's run from last.pt (real engine)."""
from __future__ import annotations

from pathlib import Path

import conftest_studies
import pytest
from conftest_studies import make_ctx, mlflow_client, store, synth  # noqa: F401
from optuna.trial import TrialState

from harness.train import checkpoints as ckpt
from harness.train import run_training
from studies.engine_bridge import make_config
from studies.resume import RESUMED_ATTR
from studies.table import run_table_study


def test_retried_cell_resumes_the_failed_run_and_matches_an_uninterrupted_run(synth: Path, store: Path,
                                                                              tmp_path: Path) -> None:
    ctx = make_ctx(synth, store, tmp_path, table="meanP", trainer=conftest_studies.crash_once_trainer)
    conftest_studies.crash_once_trainer.calls.clear()
    result = run_table_study(ctx, ["meanP_E4"], [42])

    trials = result.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    failed, retry = trials
    run_id = retry.user_attrs["mlflow_run_id"]
    assert retry.user_attrs[RESUMED_ATTR] == run_id       # the retry continued the failed trial's run
    # The engine was called twice: fresh (crashed after epoch 0), then resumed for epoch 1 only.
    calls = conftest_studies.crash_once_trainer.calls
    assert [(c[2], c[3]) for c in calls] == [(None, [0]), (run_id, [1])]

    run = mlflow_client(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["optuna.trial"] == str(retry.number) and run.data.tags["resumed_from_epoch"] == "1"
    assert not (ckpt.checkpoint_dir(store, run_id) / ckpt.LAST).exists()   # a finished run frees it
    history = mlflow_client(store).get_metric_history(run_id, "t2v/R1")
    assert sorted(m.step for m in history) == [0, 1]                     # each epoch logged once

    # The same cell trained in one go: the same metrics at every epoch, the same best result.
    plain = run_training(make_config(ctx, "meanP_E4", 42, {}))
    for direction in ("t2v", "v2t"):
        for metric, value in getattr(plain, direction).items():
            assert retry.user_attrs[direction][metric] == pytest.approx(value, abs=1e-6), (direction, metric)
    assert retry.value == pytest.approx(plain.t2v["R1"], abs=1e-6)
    by_step = {m.step: m.value for m in history}
    assert [by_step[e] for e in (0, 1)] == pytest.approx([row["t2v/R1"] for row in plain.history], abs=1e-6)
    assert failed.user_attrs["error"].startswith("RuntimeError: simulated crash")


def test_a_damaged_checkpoint_is_not_continued_the_retry_trains_from_scratch(
        synth: Path, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(synth, store, tmp_path, table="meanP", trainer=conftest_studies.crash_once_trainer)
    conftest_studies.crash_once_trainer.calls.clear()
    monkeypatch.setattr(conftest_studies.crash_once_trainer, "damage", True)
    result = run_table_study(ctx, ["meanP_A4"], [43])

    failed, retry = result.trials
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    resumed = retry.user_attrs[RESUMED_ATTR]
    assert "resume_error" in retry.user_attrs
    calls = conftest_studies.crash_once_trainer.calls
    # a resume attempt that trained nothing, then a whole fresh run in a new MLflow run
    assert [(c[2], c[3]) for c in calls] == [(None, [0]), (resumed, []), (None, [0, 1])]
    assert retry.user_attrs["mlflow_run_id"] != resumed
    assert mlflow_client(store).get_run(retry.user_attrs["mlflow_run_id"]).info.status == "FINISHED"
