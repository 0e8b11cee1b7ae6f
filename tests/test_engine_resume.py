"""Resume equivalence, the non-finite-loss guard and the logit-scale clamp."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest_engine import make_cfg, metric_history, mlflow_run, one_thread, store, synth  # noqa: F401

from harness.train import model as train_model_module
from harness.train import RetrievalModel, StopRun, TrainingDiverged, run_training, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _last(store: Path, run_id: str) -> dict[str, Any]:  # noqa: F811
    return torch.load(Path(store) / "checkpoints" / run_id / "last.pt", weights_only=False)


def test_resume_after_kill_matches_uninterrupted_run(synth: Path, store: Path) -> None:  # noqa: F811
    # tightTransf has dropout in its cross encoder: equality needs the RNG state restored too.
    cfg = make_cfg(synth, store, variant="tightTransf_E4", protocol="paper", keep_last=True)
    full = run_training(cfg)

    def kill_after_first_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 0:
            raise StopRun("simulated kill")

    with pytest.raises(StopRun):
        run_training(cfg, on_epoch=kill_after_first_epoch)
    killed = mlflow_run(store, _killed_run_id(store))
    assert killed.info.status == "KILLED"
    run_id = killed.info.run_id
    assert _last(store, run_id)["epoch"] == 0

    resumed = run_training(dataclasses.replace(cfg, resume=run_id))
    assert resumed.run_id == run_id
    assert resumed.history == full.history          # exact floats, every epoch
    assert (resumed.t2v, resumed.v2t, resumed.best_epoch) == (full.t2v, full.v2t, full.best_epoch)
    a, b = _last(store, full.run_id)["model"], _last(store, run_id)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = mlflow_run(store, run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in metric_history(store, run_id, "t2v/R1")] == [0, 1]


def _killed_run_id(store: Path) -> str:  # noqa: F811
    from conftest_engine import uri
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(store))
    exp = client.get_experiment_by_name("eabench")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'KILLED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def _nan_on(calls: set[int] | None, from_call: int | None = None):  # type: ignore[no-untyped-def]
    real = train_model_module.symmetric_infonce
    count = {"n": 0}

    def loss(logits: torch.Tensor) -> torch.Tensor:
        count["n"] += 1
        out = real(logits)
        if (calls and count["n"] in calls) or (from_call is not None and count["n"] >= from_call):
            return out * float("nan")
        return out
    return loss


def test_one_nan_step_is_skipped_and_counted(synth: Path, store: Path,  # noqa: F811
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_model_module, "symmetric_infonce", _nan_on({2}))
    res = run_training(make_cfg(synth, store, variant="meanP_A4"))
    assert res.skipped_steps == 1
    assert [v for _, v in metric_history(store, res.run_id, "train/skipped_steps")] == [1.0, 1.0]
    assert all(math.isfinite(h["train/loss"]) for h in res.history)


def test_many_nan_steps_stop_the_run_with_checkpoint_intact(synth: Path, store: Path,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 training videos / batch 8 = 2 steps per epoch: every step from epoch 1 on is NaN.
    monkeypatch.setattr(train_model_module, "symmetric_infonce", _nan_on(None, from_call=3))
    cfg = make_cfg(synth, store, variant="meanP_A4", epochs=3, max_nonfinite_steps=2)
    with pytest.raises(TrainingDiverged, match=r"\(2 in a row\)") as err:
        run_training(cfg)
    assert "last.pt" in str(err.value)
    from conftest_engine import uri
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri(store))
    exp = client.get_experiment_by_name("eabench")
    run = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    last = _last(store, run.info.run_id)
    assert last["epoch"] == 0 and len(last["history"]) == 1


def _frozen_model(variant: str = "meanP") -> RetrievalModel:
    from variants import build_head

    torch.manual_seed(0)
    return RetrievalModel(build_head(variant, num_frames=4, embed_dim=8), None, "fast")


def test_train_step_skips_non_finite_loss_without_touching_state() -> None:
    from harness.optim import build_optimizer, param_groups

    model = _frozen_model("meanP_E4_A4")
    groups = param_groups(model.named_parameters(), lr=1e-2, coef_lr=1.0, weight_decay=0.2,
                          is_clip=lambda n: False)
    opt, sched = build_optimizer("adamw", groups, t_total=100, warmup=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = torch.randn(4, 4, 8)
    frames[1, 0, 0] = float("nan")
    _, applied = train_step(model, model, opt, sched, (frames, torch.ones(4, 4), torch.randn(4, 8)), 1.0)
    assert not applied
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(opt.state) == 0 and sched.last_epoch == 0
    frames[1, 0, 0] = 0.0
    _, applied = train_step(model, model, opt, sched, (frames, torch.ones(4, 4), torch.randn(4, 8)), 1.0)
    assert applied and sched.last_epoch == 1


def test_logit_scale_clamped_after_step() -> None:
    from harness.optim import build_optimizer, param_groups

    model = _frozen_model("meanP")
    with torch.no_grad():
        model.head.logit_scale.fill_(math.log(100.0) - 1e-3)
    groups = param_groups(model.named_parameters(), lr=1.0, coef_lr=1.0, weight_decay=0.0,
                          is_clip=lambda n: False)
    opt, sched = build_optimizer("adamw", groups, t_total=10**6, warmup=0.0)
    # video i = basis vector e_i in every frame; text i = e_i + 3 (e_0+..+e_3): cos 0.61 with its
    # own video, 0.46 with the others. Positives win (a larger scale lowers the loss) by a margin
    # of 15 logits at scale 100, so the softmax does not saturate and the gradient is not zero.
    eye = torch.eye(4, 8)
    video = eye.unsqueeze(1).expand(4, 4, 8).contiguous()
    text = eye + 3.0 * eye.sum(0, keepdim=True)
    train_step(model, model, opt, sched, (video, torch.ones(4, 4), text), 1.0)
    # unclamped, AdamW's first step (lr 1 x sign of the gradient) would have moved it by ~1
    assert model.head.logit_scale.item() == torch.tensor(math.log(100.0), dtype=torch.float32).item()
