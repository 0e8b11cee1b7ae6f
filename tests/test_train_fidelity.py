"""Paper-protocol fidelity outside the blocks (PAPER.md §1.2, §4.3): frozen CLIP parameters, the
best-epoch tie rule, the evaluation batch, and validation before compute."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest_engine import make_cfg, mlflow_run, one_thread, store, synth  # noqa: F401

from harness.errors import ConfigError
from harness.train import loop, resolve_plan, run_training

FROZEN_PAPER = {"token_embedding.weight", "positional_embedding", "visual.class_embedding",
                "visual.positional_embedding", "visual.conv1.weight", "visual.ln_pre.weight",
                "visual.ln_pre.bias"}


@pytest.mark.parametrize("numerics", ["fast", "reference"])
def test_paper_model_freezes_what_clip4clip_freezes(numerics: str) -> None:
    from harness.backbone import TINY_CLIP, load_clip
    from harness.optim import param_groups
    from harness.train.model import build_model, is_clip_param

    torch.manual_seed(0)
    model = build_model("seqTransf_A4", load_clip(TINY_CLIP), protocol="paper", numerics=numerics,
                        num_frames=4)
    frozen = {n[len("clip.model."):] for n, p in model.named_parameters() if not p.requires_grad}
    # CLIP's own logit_scale is unused (the head's stands for it and trains)
    assert frozen == FROZEN_PAPER | {"logit_scale"}
    assert model.head.logit_scale.requires_grad
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "clip.model.transformer.resblocks.0.attn.in_proj_weight" in trained
    assert "clip.model.visual.transformer.resblocks.0.mlp.c_fc.weight" in trained
    assert {"clip.model.ln_final.weight", "clip.model.text_projection", "clip.model.visual.proj",
            "clip.model.visual.ln_post.bias"} <= trained
    # the optimiser never sees a frozen tensor (no update, no weight decay)
    groups = param_groups(model.named_parameters(), lr=1e-4, coef_lr=1e-3, weight_decay=0.2,
                          is_clip=lambda n: is_clip_param(n, "paper"))
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_groups for _, p in model.named_parameters() if not p.requires_grad)


def test_best_epoch_tie_goes_to_the_later_epoch(synth: Path, store: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch, one_thread) -> None:  # noqa: F811
    real = loop.score

    def constant_r1(*args, **kwargs):  # type: ignore[no-untyped-def]
        scores = real(*args, **kwargs)
        scores.metrics["t2v"]["R1"] = 50.0  # every epoch ties
        return scores

    monkeypatch.setattr(loop, "score", constant_r1)
    result = run_training(make_cfg(synth, store, epochs=3))
    assert result.best_epoch == 2  # CLIP4Clip: `if best_score <= R1` keeps the later epoch
    run = mlflow_run(store, result.run_id)
    assert run.data.metrics["best_epoch"] == 2.0


def test_evaluation_batch_follows_numerics(synth: Path, store: Path) -> None:  # noqa: F811
    ref = resolve_plan(make_cfg(synth, store, protocol="paper", numerics="reference", eval_batch_size=None,
                                overrides=(("batch_size_val", "16"),)))
    assert ref.eval_batch_size == 16
    fast = resolve_plan(make_cfg(synth, store, protocol="paper", numerics="fast", eval_batch_size=None))
    assert fast.eval_batch_size == 64
    chosen = resolve_plan(make_cfg(synth, store, protocol="paper", numerics="reference", eval_batch_size=5))
    assert chosen.eval_batch_size == 5
    assert resolve_plan(make_cfg(synth, store, protocol="paper", numerics="auto")).numerics == "reference"
    assert resolve_plan(make_cfg(synth, store, protocol="frozen", numerics="auto")).numerics == "fast"


@pytest.mark.parametrize(("key", "value", "word"), [
    ("lr", "inf", "lr"), ("lr", "0", "lr"), ("lr", "nan", "lr"), ("weight_decay", "-0.1", "weight_decay"),
    ("max_grad_norm", "-1", "max_grad_norm"), ("max_grad_norm", "0", "max_grad_norm"),
    ("max_words", "2", "max_words"), ("max_frames", "0", "max_frames"),
    ("feature_framerate", "0", "feature_framerate"), ("emulate_gpus", "3", "emulate_gpus"),
    ("emulate_gpus", "0", "emulate_gpus"), ("batch_size_val", "0", "batch_size_val"),
])
def test_bad_numbers_fail_before_compute(synth: Path, store: Path, key: str, value: str,  # noqa: F811
                                         word: str) -> None:
    cfg = make_cfg(synth, store, overrides=((key, value),))
    with pytest.raises(ConfigError, match=word):
        resolve_plan(cfg)


@pytest.mark.parametrize("field", ["eval_batch_size", "limit_train", "limit_test", "workers"])
def test_bad_counts_fail_before_compute(synth: Path, store: Path, field: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        resolve_plan(dataclasses.replace(make_cfg(synth, store), **{field: 0}))
