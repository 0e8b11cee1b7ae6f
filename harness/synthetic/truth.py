"""Where the relevant frames are: per-second truth, its mapping to sampled frames, the truth file.

``synthetic_truth.json`` records the config and, per video, the split, the relevant seconds and
the objects: ``{"config": {...}, "videos": {video_id: {"split", "relevant_seconds", "objects"}}}``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError
from harness.synthetic.config import SyntheticConfig

__all__ = ["TRUTH_FILE", "load_truth", "relevant_frames", "relevant_seconds"]

TRUTH_FILE = "synthetic_truth.json"


def relevant_seconds(rng: np.random.Generator, cfg: SyntheticConfig) -> list[bool]:
    n, k = cfg.frames, cfg.num_relevant
    if cfg.placement == "fixed":
        start = (n - k) // 2
        chosen = set(range(start, start + k))
    else:
        chosen = {int(i) for i in rng.choice(n, size=k, replace=False)}
    return [i in chosen for i in range(n)]


def relevant_frames(relevant_secs: list[bool], max_frames: int) -> list[bool]:
    """Map per-second truth to the T = ``max_frames`` sampled frame positions (1 frame per second,
    CLIP4Clip ``slice_framepos=2``: ``linspace(0, n-1, T).astype(int)`` when n > T, else the n
    seconds followed by padding, which is never relevant)."""
    n = len(relevant_secs)
    if n > max_frames:
        idx = np.linspace(0, n - 1, max_frames).astype(int)
        return [bool(relevant_secs[i]) for i in idx]
    return [bool(r) for r in relevant_secs] + [False] * (max_frames - n)


def load_truth(root: Path) -> dict[str, Any]:
    """``synthetic_truth.json`` under ``root``: {"config": {...}, "videos": {video_id: {...}}}."""
    path = Path(root) / TRUTH_FILE
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
        truth["config"], truth["videos"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a synthetic ground-truth file ({type(exc).__name__}: {exc}); "
                        f"regenerate it with `eabench data synthetic`") from exc
    return truth
