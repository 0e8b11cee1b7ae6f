"""Training checkpoints: atomic saves, RNG state capture, and where a run's files live.

Layout: ``<tracking root>/checkpoints/<run_id>/last.pt`` (full training state, rewritten after
every epoch; removed once the run finishes unless kept) and ``best.pt`` (model weights of the
best epoch plus the resolved config, used by ``eabench eval``).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import CheckpointError
from harness.files import save_atomic

__all__ = ["BEST", "LAST", "checkpoint_dir", "load", "rng_state", "save_atomic", "set_rng_state"]

LAST = "last.pt"
BEST = "best.pt"


def checkpoint_dir(root: Path | str, run_id: str) -> Path:
    return Path(root) / "checkpoints" / run_id


def load(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``: tensors and plain Python values only.

    A file that needs anything else to unpickle (a planted or foreign pickle) is refused before a
    single object of it is built, so loading a checkpoint never runs code from the file.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train with checkpoints first "
                              f"(every run writes {LAST} while training and {BEST} at its best epoch)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted, foreign, or a pickle that wants more than tensors
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}. "
            f"Only checkpoints written by eabench (tensors and plain values) are loaded; a file that "
            f"needs arbitrary classes to unpickle is refused on purpose") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an eabench checkpoint (a {type(obj).__name__}, not a dict)")
    return obj


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
