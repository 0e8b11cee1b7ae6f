"""A row of a paper table, as plain data: what the catalog produces and the registry files."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL_DATASETS", "PaperRow"]

ALL_DATASETS: tuple[str, ...] = ("msrvtt", "didemo", "activitynet")


@dataclass(frozen=True)
class PaperRow:
    """A row of a paper table: table name, the row label, and the datasets it was run on."""

    table: str
    label: str
    dataset_scope: tuple[str, ...] = ALL_DATASETS
