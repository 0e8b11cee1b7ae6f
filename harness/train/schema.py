"""The MLflow run schema: every tag, param, metric and artifact name a training run writes.

Training writes runs through these names and ``reports/`` reads them back through the same
names, so the two cannot drift apart. docs/ARCHITECTURE.md ("MLflow run schema") describes them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.tracking import git_commit

__all__ = [
    "ARTIFACT_CHECKPOINT_DIR",
    "ARTIFACT_CONFIG",
    "ARTIFACT_FIGURE_CURVES",
    "ARTIFACT_FIGURE_WEIGHTS",
    "ARTIFACT_FRAME_WEIGHTS",
    "ARTIFACT_HISTORY",
    "ARTIFACT_RANKS",
    "DIRECTIONS",
    "KIND_STUDY",
    "KIND_TRAIN",
    "METRICS",
    "METRIC_BEST_EPOCH",
    "METRIC_LOSS",
    "METRIC_LR",
    "METRIC_LR_CLIP",
    "METRIC_SKIPPED",
    "TAG_DATASET",
    "TAG_KIND",
    "TAG_NUMERICS",
    "TAG_PAPER_LABEL",
    "TAG_PAPER_TABLE",
    "TAG_PROTOCOL",
    "TAG_SEED",
    "TAG_STUDY",
    "TAG_TEMPORAL",
    "TAG_TRIAL",
    "TAG_VARIANT",
    "best_key",
    "flat_metrics",
    "metric_key",
    "nested_metrics",
    "run_params",
    "run_tags",
]

# -- metrics --------------------------------------------------------------------------------------
DIRECTIONS: tuple[str, ...] = ("t2v", "v2t")
METRICS: tuple[str, ...] = ("R1", "R5", "R10", "R50", "MdR", "MnR")  # column order of every table
METRIC_LOSS = "train/loss"                 # mean over the epoch's applied steps
METRIC_LR = "train/lr"                     # new-parameter lr at the epoch's end
METRIC_LR_CLIP = "train/lr_clip"           # CLIP's lr (paper protocol)
METRIC_SKIPPED = "train/skipped_steps"     # cumulative non-finite steps
METRIC_BEST_EPOCH = "best_epoch"

# -- tags -----------------------------------------------------------------------------------------
TAG_VARIANT = "variant"
TAG_TEMPORAL = "temporal"
TAG_DATASET = "dataset"
TAG_PROTOCOL = "protocol"
TAG_NUMERICS = "numerics"
TAG_PAPER_TABLE = "paper_table"
TAG_PAPER_LABEL = "paper_label"
TAG_SEED = "seed"
TAG_KIND = "eabench.kind"
TAG_STUDY = "optuna.study"
TAG_TRIAL = "optuna.trial"
KIND_TRAIN = "train"
KIND_STUDY = "study"

# -- artifacts ------------------------------------------------------------------------------------
ARTIFACT_CONFIG = "config.json"
ARTIFACT_HISTORY = "history.json"
ARTIFACT_FRAME_WEIGHTS = "frame_weights.npz"
ARTIFACT_RANKS = "ranks.npz"               # per-query ranks at the best epoch (eval/ranks.npz: eabench eval)
ARTIFACT_CHECKPOINT_DIR = "checkpoint"
ARTIFACT_FIGURE_WEIGHTS = "figures/frame_weights.png"   # the best epoch's first test videos
ARTIFACT_FIGURE_CURVES = "figures/training_curves.png"


def metric_key(direction: str, metric: str) -> str:
    """``t2v/R1`` and the like, as logged per epoch."""
    return f"{direction}/{metric}"


def best_key(direction: str, metric: str) -> str:
    """``best/t2v/R1``: the best epoch's value."""
    return f"best/{direction}/{metric}"


def flat_metrics(metrics: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """``{"t2v": {"R1": ..}, ..}`` -> ``{"t2v/R1": .., ..}``."""
    return {f"{prefix}{d}/{k}": float(v) for d in DIRECTIONS for k, v in metrics[d].items()}


def nested_metrics(flat: dict[str, float], direction: str) -> dict[str, float]:
    """The inverse of :func:`flat_metrics` for one direction."""
    prefix = f"{direction}/"
    return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def run_tags(plan: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tags of a training run (``plan``: a ``harness.train.plan.RunPlan``)."""
    row = plan.rows[0] if plan.rows else None
    tags = {TAG_VARIANT: plan.spec.name, TAG_TEMPORAL: plan.spec.temporal, TAG_DATASET: plan.cfg.dataset,
            TAG_PROTOCOL: str(plan.protocol), TAG_PAPER_TABLE: row.table if row else "",
            TAG_PAPER_LABEL: row.label if row else "", TAG_SEED: str(plan.preset.seed),
            TAG_NUMERICS: str(plan.numerics), TAG_KIND: KIND_TRAIN}
    tags.update(extra or {})
    return tags


def run_params(plan: Any, backbone: Any, inputs: Any, steps_per_epoch: int, world_size: int
               ) -> dict[str, Any]:
    """The params of a training run: the variant's axes, the preset, and what was resolved."""
    p, cfg = plan.preset, plan.cfg
    params: dict[str, Any] = dict(plan.spec.as_params())
    params.update({f"preset.{k}": v for k, v in p.to_dict().items()})
    params.update({
        "dataset": cfg.dataset, "protocol": str(plan.protocol), "backbone": plan.backbone,
        "weights": str(plan.weights) if plan.weights else "random",
        "weights_sha256": backbone.weights_sha256 or "random", "seed": p.seed,
        "epochs": p.epochs, "batch_size": p.batch_size, "lr": p.lr, "coef_lr": p.coef_lr,
        "max_frames": p.max_frames, "max_words": p.max_words, "numerics": str(plan.numerics),
        "optimizer": str(plan.optimizer), "git_commit": git_commit(),
        "frame_cache": str(inputs.cache.path), "data_root": str(Path(cfg.root).resolve()),
        "train_videos": len(inputs.train), "test_videos": len(inputs.test_ids),
        "test_texts": len(inputs.test_texts), "steps_per_epoch": steps_per_epoch,
        "failed_videos_train": len(inputs.failed_train), "failed_videos_test": len(inputs.failed_test),
        "world_size": world_size, "compile": cfg.compile, "grad_checkpointing": cfg.grad_checkpointing,
        "limit_train": cfg.limit_train, "limit_test": cfg.limit_test,
        "eval_batch_size": plan.eval_batch_size, "emulate_gpus": p.emulate_gpus,
        "loss_groups": p.emulate_gpus if plan.spec.temporal == "tightTransf" else 1,
    })
    return params
