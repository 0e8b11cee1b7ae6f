"""The training engine: one run of one variant, from a ``TrainConfig`` to a tracked result.

Modules, in the order a run uses them:

- ``config``: the protocol/numerics/optimizer choices and ``TrainConfig``;
- ``plan``: ``resolve_plan`` validates a config into a ``RunPlan`` without compute; resume;
- ``inputs``: records, the frame cache, frozen features and the batches of each step;
- ``model``: ``build_model``, the one place that turns (variant, CLIP, protocol, numerics) into
  a model, and its optimiser;
- ``evaluation``: ``score`` (test-split metrics and frame weights) and ``evaluate``;
- ``schema``: the MLflow tag/param/metric/artifact names training writes and reports read;
- ``loop``: ``run_training``, ``train_one_epoch``, ``train_step``;
- ``checkpoints``, ``resources``, ``result``: checkpoint files, what a process keeps between
  runs, and what a run returns.
"""
from __future__ import annotations

from harness.train.config import Numerics, Optimizer, Protocol, TrainConfig
from harness.train.evaluation import evaluate, score
from harness.train.loop import run_training, train_one_epoch, train_step
from harness.train.model import RetrievalModel, build_model, build_optimizer_for, compile_parts
from harness.train.plan import RunPlan, resolve_plan
from harness.train.resources import Resources
from harness.train.result import StopRun, TrainingDiverged, TrainResult, result_json

__all__ = [
    "Numerics",
    "Optimizer",
    "Protocol",
    "Resources",
    "RetrievalModel",
    "RunPlan",
    "StopRun",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "build_model",
    "build_optimizer_for",
    "compile_parts",
    "evaluate",
    "resolve_plan",
    "result_json",
    "run_training",
    "score",
    "train_one_epoch",
    "train_step",
]
