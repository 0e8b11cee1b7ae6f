"""``eabench train --dry-run``: the protocol a run will follow, before any GPU hour is spent.

``describe_run`` resolves the config, reads the annotation files (to count training pairs) and
builds the model on PyTorch's ``meta`` device (shapes only, no memory, no weights read), then
reports what will be frozen and trained, at which learning rates, in which numerics, with how
many emulated GPUs, and how many steps. Nothing is decoded, loaded or tracked.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from harness.backbone import clip_on_meta
from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings
from harness.data.records import training_pairs
from harness.errors import DataError
from harness.train.config import Protocol, TrainConfig
from harness.train.inputs import read_records
from harness.train.model import build_model, frozen_clip_parameters, is_clip_param
from harness.train.plan import RunPlan, resolve_plan

__all__ = ["describe_plan", "describe_run"]


def _training_pairs(plan: RunPlan, image_size: int) -> tuple[int, int]:
    """(training pairs per epoch, videos known to fail decoding) from the annotation files and,
    when it exists, the frame cache's record of failed videos."""
    train, _test = read_records(plan)
    failed: set[str] = set()
    try:
        settings = FrameSettings(plan.preset.max_frames, plan.preset.feature_framerate,
                                 plan.preset.slice_framepos, image_size)
        failed = set(FrameCache.open(plan.cache_root, settings, plan.cfg.dataset).failed)
    except (DataError, OSError, ValueError):
        pass
    usable = [r for r in train if r.video_id not in failed]
    return len(training_pairs(usable, plan.preset.expand_sentences)), len(failed)


def describe_plan(plan: RunPlan, backbone: Any, train_pairs: int) -> dict[str, Any]:
    """The resolved protocol of ``plan`` as a JSON-able dict (see ``eabench train --dry-run``);
    ``backbone`` may live on the meta device."""
    p = plan.preset
    with torch.device("meta"):
        model = build_model(plan.spec, backbone, protocol=plan.protocol, numerics=plan.numerics,
                            num_frames=p.max_frames, device="meta", emulate_gpus=p.emulate_gpus)
    counts = {"clip": 0, "new": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts["clip" if is_clip_param(name, plan.protocol) else "new"] += param.numel()
    paper = plan.protocol is Protocol.PAPER
    frozen = frozen_clip_parameters([n for n, _ in backbone.model.named_parameters()]) if paper else []
    steps = train_pairs // p.batch_size
    total = steps * p.epochs
    loose = plan.spec.temporal != "tightTransf"
    return {
        "variant": plan.spec.name, "dataset": plan.cfg.dataset, "protocol": str(plan.protocol),
        "backbone": plan.backbone, "device": str(plan.device),
        "numerics": str(plan.numerics), "optimizer": str(plan.optimizer),
        "frozen_clip_params": frozen,
        "trainable": counts,
        "lr": {"clip": p.lr * p.coef_lr if paper else 0.0, "new": p.lr},
        "weight_decay": p.weight_decay, "max_grad_norm": p.max_grad_norm,
        "emulate_gpus": p.emulate_gpus,
        "loss_groups": 1 if loose else p.emulate_gpus,
        # Loose types: what runs before the feature all-gather gets 1/G of the gradient; the
        # tight type has no gather (its per-group mean loss already is what G GPUs average).
        "grad_scale_pre_gather": 1.0 / p.emulate_gpus if loose else 1.0,
        "batch_size": p.batch_size, "batch_per_emulated_gpu": p.batch_size // p.emulate_gpus,
        "eval_batch_size": plan.eval_batch_size,
        "max_frames": p.max_frames, "max_words": p.max_words,
        "epochs": p.epochs, "train_pairs": train_pairs, "steps_per_epoch": steps,
        "total_steps": total, "warmup_steps": math.ceil(p.warmup_proportion * total),
        "seed": p.seed,
    }


def describe_run(cfg: TrainConfig) -> dict[str, Any]:
    """Resolve ``cfg`` and describe it; no decoding, no CLIP weights read, no MLflow run."""
    plan = resolve_plan(cfg)
    backbone = clip_on_meta(plan.backbone)
    pairs, failed = _training_pairs(plan, backbone.image_size)
    out = describe_plan(plan, backbone, pairs)
    out["videos_known_to_fail"] = failed
    out["warnings"] = []
    if out["steps_per_epoch"] == 0:
        out["warnings"].append(f"batch size {plan.preset.batch_size} exceeds the {pairs} training pairs "
                               f"found: the run would stop; lower --batch-size")
    return out
