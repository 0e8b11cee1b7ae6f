"""Side inputs of the weight figures: synthetic ground truth and frame thumbnails.

Both are found from a run's params (``data_root``, ``frame_cache``); when either is missing the
figures still render (no relevant marks / placeholder thumbnails) and say why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.frame_cache import FrameCache
from harness.data.frames import FrameSettings
from harness.synthetic import TRUTH_FILE
from reports.runs import FrameWeights, RunRecord

__all__ = ["find_truth", "load_truth", "relevant_matrix", "thumbnail_source"]


def find_truth(record: RunRecord) -> Path | None:
    """``synthetic_truth.json`` beside the annotations of the run's data root, if there is one."""
    root = record.params.get("data_root") or record.tags.get("data_root")
    if not root:
        return None
    p = Path(root)
    for cand in (p / TRUTH_FILE, p.parent / TRUTH_FILE):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=8)
def load_truth(path: Path) -> dict[str, Any]:
    """``{video_id: entry}`` from the truth file (accepts the file's ``{"videos": {...}}`` wrapper)."""
    data = json.loads(Path(path).read_text())
    return data.get("videos", data) if isinstance(data, dict) else {}


def _entry_relevant(entry: Any, times: np.ndarray | None, T: int) -> np.ndarray | None:
    """Relevance per sampled frame position for one video's truth entry.

    ``relevant``: already per frame position (length T). ``relevant_seconds``: one bool per second
    of the video; a frame sampled at time s is relevant when second floor(s) is.
    """
    if not isinstance(entry, dict):
        return None
    if "relevant" in entry and len(entry["relevant"]) == T:
        return np.asarray(entry["relevant"], dtype=bool)
    secs = entry.get("relevant_seconds", entry.get("relevant"))
    if secs is None:
        return None
    secs = list(secs)
    if secs and not isinstance(secs[0], bool) and all(isinstance(s, (int, float)) for s in secs):
        # a list of relevant second indices rather than one flag per second
        flags = np.zeros(int(max(secs)) + 1, dtype=bool)
        flags[[int(s) for s in secs]] = True
    else:
        flags = np.asarray(secs, dtype=bool)
    out = np.zeros(T, dtype=bool)
    if times is not None and np.isfinite(times).any():
        for t, s in enumerate(times):
            if np.isfinite(s):
                k = int(np.floor(s + 1e-6))
                out[t] = 0 <= k < len(flags) and bool(flags[k])
        return out
    # No sampled times logged: at 1 fps with no slicing, position t is second t.
    n = min(T, len(flags))
    out[:n] = flags[:n]
    return out


def relevant_matrix(
    truth: dict[str, Any], fw: FrameWeights, times_of: Callable[[str], np.ndarray | None] | None = None
) -> np.ndarray | None:
    """[N, T] bool relevance of every frame position of the logged videos; None if none is known."""
    N, T = fw.mask.shape
    out = np.zeros((N, T), dtype=bool)
    found = 0
    for i, vid in enumerate(fw.video_ids):
        times = fw.frame_times[i] if fw.frame_times is not None else (times_of(vid) if times_of else None)
        rel = _entry_relevant(truth.get(vid), times, T)
        if rel is not None:
            out[i] = rel & (fw.mask[i] > 0)
            found += 1
    return out if found else None


def thumbnail_source(record: RunRecord, T: int) -> tuple[Any | None, str]:
    """The run's frame cache (an object with ``get(video_id)``), or None and the reason."""
    raw = record.params.get("frame_cache") or record.tags.get("frame_cache")
    if not raw:
        return None, "thumbnails unavailable: the run logged no frame_cache param"
    root = Path(raw)
    if not root.exists():
        return None, f"thumbnails unavailable: frame cache {root} not found on this machine"
    metas = [root / "meta.json"] if (root / "meta.json").is_file() else sorted(root.glob("*/*/meta.json"))
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
            s = meta["settings"]
            if int(s["max_frames"]) != T or (
                record.dataset not in ("", "?") and meta.get("dataset") not in (record.dataset, None)
            ):
                continue
            settings = FrameSettings(
                max_frames=int(s["max_frames"]),
                fps=float(s["fps"]),
                slice_framepos=int(s["slice_framepos"]),
                image_size=int(s["image_size"]),
            )
            return FrameCache.open(meta_path.parent.parent.parent, settings, meta["dataset"]), ""
        except Exception:  # a foreign or half-written cache folder: try the next one
            continue
    return None, f"thumbnails unavailable: no frame cache with T={T} under {root}"
