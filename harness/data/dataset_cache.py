"""The frame cache of a whole dataset: read its splits' records, decode every video not cached yet.

What ``eabench data cache`` does and ``eabench reproduce`` does before its studies;
:meth:`harness.data.frame_cache.FrameCache.build` does the decoding.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from harness.console import log
from harness.data.frame_cache import BuildReport, FrameCache, default_cache_root
from harness.data.frame_cache_build import check_workers
from harness.data.frames import FrameSettings, settings_for
from harness.data.readers import read_dataset
from harness.presets import get_preset

__all__ = ["DatasetCache", "cache_dataset"]


@dataclass(frozen=True)
class DatasetCache:
    """A built cache: the cache itself, what this build did, and what it covered."""

    cache: FrameCache
    report: BuildReport
    settings: FrameSettings
    splits: tuple[str, ...]
    cache_root: Path


def cache_dataset(dataset: str, root: str | Path, *, splits: Sequence[str] | None = None,
                  videos: str | Path | None = None, settings: FrameSettings | None = None,
                  cache_root: str | Path | None = None, workers: int = 1,
                  progress: bool = True) -> DatasetCache:
    """Decode the videos of ``splits`` (default: the preset's train and test split) into the cache.

    ``settings`` default to the preset's (:func:`harness.data.frames.settings_for`), ``cache_root``
    to ``$EABENCH_CACHE`` or ``<root>/.eabench-cache``. Resumable: finished videos are kept, so
    an interrupted build (Ctrl-C) continues where it stopped when called again.
    """
    check_workers(workers)  # every setting is checked before any annotation file is read
    preset = get_preset(dataset)
    settings = settings or settings_for(dataset)
    splits = tuple(splits or (preset.train_split, preset.test_split))
    cache_root = Path(cache_root) if cache_root is not None else default_cache_root(root)
    records = [r for split in splits for r in read_dataset(dataset, root, split, videos)]
    log(f"frame cache {escape(str(cache_root / dataset / settings.key()))}: "
        f"{len({r.video_id for r in records})} videos of {escape(', '.join(splits))}, {workers} worker(s)")
    report = FrameCache.build(records, settings, cache_root, workers, dataset=dataset, progress=progress)
    return DatasetCache(FrameCache.open(cache_root, settings, dataset), report, settings, splits, cache_root)
