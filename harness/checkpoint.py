"""Training checkpoints: atomic saves, RNG state capture, and where a run's files live.

Layout: ``<tracking root>/checkpoints/<run_id>/last.pt`` (full training state, rewritten after
every epoch; removed once the run finishes unless kept) and ``best.pt`` (model weights of the
best epoch plus the resolved config, used by ``eabench eval``).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import EABenchError

__all__ = ["BEST", "LAST", "checkpoint_dir", "load", "rng_state", "save_atomic", "set_rng_state"]

LAST = "last.pt"
BEST = "best.pt"


def checkpoint_dir(root: Path | str, run_id: str) -> Path:
    return Path(root) / "checkpoints" / run_id


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill mid-write leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EABenchError(f"checkpoint {path} does not exist; train with checkpoints first "
                           f"(every run writes {LAST} while training and {BEST} at its best epoch)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupted or foreign file
        raise EABenchError(f"cannot read checkpoint {path}: {exc}") from exc


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
