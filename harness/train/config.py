"""What one training run is asked to do: the protocol and numerics choices and ``TrainConfig``.

The choices are defined here once (``Protocol``, ``Numerics``, ``Optimizer``) and used by every
command line, the studies and the benchmarks. ``TrainConfig`` is the request as a user writes it;
``harness.train.plan`` resolves it against the dataset preset into a validated ``RunPlan``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Numerics", "Optimizer", "Protocol", "TrainConfig"]


class Protocol(StrEnum):
    """``paper``: CLIP and the head fine-tune (PAPER.md §4); ``frozen``: cached CLIP features, heads only."""

    PAPER = "paper"
    FROZEN = "frozen"


class Numerics(StrEnum):
    """How the paper protocol computes.

    ``reference``: CLIP4Clip's fp16 CLIP weights trained in place with BertAdam (PAPER.md §4.1);
    ``fast``: fp32 master weights, bf16 autocast on CUDA, fused AdamW. ``auto`` resolves to
    ``reference`` in the paper protocol and ``fast`` in the frozen one (no CLIP to convert).
    """

    AUTO = "auto"
    FAST = "fast"
    REFERENCE = "reference"


class Optimizer(StrEnum):
    """``auto``: BertAdam under reference numerics, AdamW under fast."""

    AUTO = "auto"
    ADAMW = "adamw"
    BERTADAM = "bertadam"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on. ``None`` fields take the dataset preset's value.

    ``overrides`` are ``--set key=value`` pairs applied to the preset (any DatasetPreset field).
    ``limit_train``/``limit_test`` keep the first N videos of a split (quick runs, tests).
    """

    variant: str
    dataset: str = "synthetic"
    root: str = "."
    protocol: str = Protocol.PAPER.value
    backbone: str | None = None
    weights: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str = "auto"
    numerics: str = Numerics.AUTO.value
    optimizer: str = Optimizer.AUTO.value
    overrides: tuple[tuple[str, str], ...] = ()
    videos: str | None = None           # folder holding the video files (default: under root)
    cache_dir: str | None = None        # frame/feature cache root (default: <root>/.eabench-cache)
    tracking_root: str = "runs"
    tracking_uri: str | None = None
    experiment: str = "eabench"
    save_checkpoint: bool = False       # log checkpoint/best.pt as an MLflow artifact
    keep_last: bool = False             # keep last.pt after a finished run
    resume: str | None = None           # MLflow run id to continue
    compile: bool = False
    grad_checkpointing: bool = False
    max_nonfinite_steps: int = 20
    eval_batch_size: int | None = None  # None: the preset's batch_size_val (reference) or 64 (fast)
    workers: int = 1                    # frame decoding processes when the cache is built
    limit_train: int | None = None
    limit_test: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = [list(kv) for kv in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["overrides"] = tuple(tuple(kv) for kv in d.get("overrides", ()))
        return cls(**d)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))
