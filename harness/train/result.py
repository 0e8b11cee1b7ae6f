"""What a run returns and how it ends: ``TrainResult``, ``StopRun``, ``TrainingDiverged``, seeding."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.errors import EABenchError

__all__ = ["StopRun", "TrainResult", "TrainingDiverged", "result_json", "seed_all"]


class StopRun(Exception):
    """Raise from ``on_epoch`` to stop a run on purpose (pruning); the run is recorded KILLED."""


class TrainingDiverged(EABenchError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainResult:
    run_id: str
    variant: str
    dataset: str
    protocol: str
    best_epoch: int
    t2v: dict[str, float]
    v2t: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    numerics: str = "fast"
    skipped_steps: int = 0
    failed_videos: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    ranks: dict[str, Any] | None = field(default=None, repr=False)  # per-query ranks (eval only)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("ranks", None)
        return d


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    return x


def result_json(result: TrainResult) -> str:
    """The one-line JSON ``--json`` prints (NaN/inf become null, so it stays valid JSON)."""
    d = {k: getattr(result, k) for k in ("run_id", "variant", "dataset", "protocol", "best_epoch",
                                         "t2v", "v2t", "numerics", "skipped_steps", "seconds")}
    d["failed_videos"] = len(result.failed_videos)
    return json.dumps(_clean(d))
