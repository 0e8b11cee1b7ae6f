"""Fault injection on the engine (issue 11): no code execution from a file, no silently wrong
result, nothing already computed lost, clear errors before compute."""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest_engine import make_cfg, mlflow_run, one_thread, store, synth, uri  # noqa: F401

from harness.errors import CheckpointError, ConfigError
from harness.train import TrainingDiverged, evaluate, run_training
from harness.train import model as model_module

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(extra or {}), "evil": _Payload(marker)}, path)  # pickles the payload


# ------------------------------------------------------------------- 1. no code from a file
def test_planted_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker, ckpt = tmp_path / "pwned", tmp_path / "best.pt"
    _plant(ckpt, marker, {"config": {}, "model": {}, "epoch": 0})
    with pytest.raises(CheckpointError, match="refused on purpose"):
        evaluate(checkpoint=ckpt, progress=False)
    assert not marker.exists()


def test_planted_feature_cache_is_recomputed_without_running_it(synth: Path, store: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = make_cfg(synth, store, cache_dir=str(cache), epochs=1)
    first = run_training(cfg)
    files = list((cache / "features").rglob("videos.pt"))
    assert files, "the frozen protocol wrote its feature cache"
    marker = tmp_path / "pwned"
    for f in files:
        _plant(f, marker, {"ids": [], "frames": None, "mask": None})
    again = run_training(cfg)
    assert not marker.exists()
    assert again.t2v == first.t2v  # recomputed from the frame cache: the same features
    assert isinstance(torch.load(files[0], weights_only=True)["frames"], torch.Tensor)


def test_checkpoint_roundtrips_every_rng_with_weights_only(synth: Path, store: Path) -> None:  # noqa: F811
    import random

    import numpy as np

    from harness.train import checkpoints as ckpt

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = ckpt.rng_state()
    path = Path(store) / "rng-roundtrip.pt"
    ckpt.save_atomic({"rng": state}, path)
    want = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == want


# ------------------------------------------------------------------- 4. divergence is per run
def _nan_calls(calls: set[int]):  # type: ignore[no-untyped-def]
    real = model_module.symmetric_infonce
    count = {"n": 0}

    def loss(logits: torch.Tensor) -> torch.Tensor:
        count["n"] += 1
        out = real(logits)
        return out * float("nan") if count["n"] in calls else out
    return loss


def test_nonfinite_steps_in_a_row_count_across_epochs(synth: Path, store: Path,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 steps per epoch; the last step of epoch 0 and the first of epoch 1 are NaN: 2 in a row
    monkeypatch.setattr(model_module, "symmetric_infonce", _nan_calls({2, 3}))
    with pytest.raises(TrainingDiverged, match=r"\(2 in a row\)"):
        run_training(make_cfg(synth, store, epochs=3, max_nonfinite_steps=2))


def test_mostly_skipped_run_is_diverged_not_finished(synth: Path, store: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # two of every three steps NaN: never 3 in a row, but most of the run did not train
    monkeypatch.setattr(model_module, "symmetric_infonce", _nan_calls({1, 2, 4, 5, 7, 8}))
    with pytest.raises(TrainingDiverged, match="3 of 4 steps"):
        run_training(make_cfg(synth, store, epochs=4, max_nonfinite_steps=3))


def test_infinite_learning_rate_is_refused_before_any_run(synth: Path, store: Path) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(store))
    exp = client.get_experiment_by_name("eabench")
    before = len(client.search_runs([exp.experiment_id]))
    with pytest.raises(ConfigError, match="lr=inf"):
        run_training(make_cfg(synth, store, overrides=(("lr", "inf"),)))
    assert len(client.search_runs([exp.experiment_id])) == before


# ------------------------------------------------------------------- 7. last.pt and temp files
def test_pruned_run_frees_last_checkpoint_but_a_stopped_one_keeps_it(synth: Path, store: Path) -> None:  # noqa: F811
    import optuna

    from harness.train import StopRun

    def prune(epoch: int, metrics: dict) -> None:
        raise optuna.TrialPruned("pruned")

    def stop(epoch: int, metrics: dict) -> None:
        raise StopRun("stopped")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(store))
    exp = client.get_experiment_by_name("eabench")
    for hook, kept in ((prune, False), (stop, True)):
        with pytest.raises((optuna.TrialPruned, StopRun)):
            run_training(make_cfg(synth, store, epochs=2), on_epoch=hook)
        newest = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                                    max_results=1)[0]
        assert newest.info.status == "KILLED"
        assert (Path(store) / "checkpoints" / newest.info.run_id / "last.pt").exists() == kept


def test_stale_temp_files_are_cleaned_and_writes_fsynced(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.files import save_atomic

    target = tmp_path / "last.pt"
    dead = tmp_path / "last.pt.tmp999999999"  # no such process
    dead.write_bytes(b"half a checkpoint")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    save_atomic({"x": torch.ones(2)}, target)
    assert not dead.exists()
    assert len(synced) >= 1  # the data before the rename (and the folder after it)
    assert torch.load(target, weights_only=True)["x"].sum() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_interrupted_save_leaves_the_old_file_and_no_temp(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.files import save_atomic

    target = tmp_path / "last.pt"
    save_atomic({"v": 1}, target)

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"v": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ------------------------------------------------------------------- 10. clear errors before compute
def test_cli_rejects_negative_clip_norm_before_any_run(synth: Path, store: Path,  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    rc = main(["train", "--variant", "meanP", "--root", str(synth), "--protocol", "frozen",
               "--tracking-root", str(store), "--set", "max_grad_norm=-1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "max_grad_norm=-1" in err and "Traceback" not in err


def test_resume_of_unknown_run_is_a_clear_error(synth: Path, store: Path) -> None:  # noqa: F811
    with pytest.raises(Exception, match="no resumable checkpoint"):
        run_training(dataclasses.replace(make_cfg(synth, store), resume="0" * 32))


def test_pickle_module_is_what_plants_use() -> None:
    assert pickle.dumps(_Payload(Path("/nonexistent")))  # the payload really pickles
