"""What one process keeps between training runs, as an object with an owner and a lifetime.

A study worker trains many trials in one process; reloading CLIP (600 MB for ViT-B/32), reopening
the frame cache index and re-reading frozen features for every trial would dominate short
frozen-protocol trials. ``Resources`` keeps them, bounded:

- at most one CLIP backbone (keyed by model name and the weights file's path, size and mtime);
- at most ``MAX_FRAME_CACHES`` open frame caches (keyed by cache root, dataset and settings);
- at most ``MAX_FEATURE_TABLES`` frozen-feature tables (keyed by their folder).

``run_training(cfg)`` without ``resources=`` uses a fresh one, so a single run shares nothing with
later ones; nothing is kept at module level.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MAX_FEATURE_TABLES", "MAX_FRAME_CACHES", "BoundedDict", "Resources"]

MAX_FRAME_CACHES = 4
MAX_FEATURE_TABLES = 4

V = TypeVar("V")


class BoundedDict(OrderedDict):  # type: ignore[type-arg]
    """A dict that forgets its least recently set entry beyond ``maxsize`` entries."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


class Resources:
    """Backbones, frame caches and feature tables shared by the runs of one owner."""

    def __init__(self) -> None:
        self.backbones: BoundedDict = BoundedDict(1)
        self.frame_caches: BoundedDict = BoundedDict(MAX_FRAME_CACHES)
        self.feature_tables: BoundedDict = BoundedDict(MAX_FEATURE_TABLES)

    @staticmethod
    def _get(store: BoundedDict, key: Any, make: Callable[[], V]) -> V:
        if key not in store:
            store[key] = make()
        return store[key]

    def backbone(self, key: Any, load: Callable[[], V]) -> V:
        return self._get(self.backbones, key, load)

    def clear(self) -> None:
        self.backbones.clear()
        self.frame_caches.clear()
        self.feature_tables.clear()
