"""Datasets: readers of the official layouts, frame decoding, the frame cache, fixtures.

``read_dataset`` and the record type are imported here; the decoder (PyAV, torch) lives in
``harness.data.frames`` and the cache in ``harness.data.frame_cache`` so that reading annotation
files stays cheap.
"""
from __future__ import annotations

from harness.data.readers import OFFICIAL_SIZES, SPLITS, read_dataset, read_split
from harness.data.records import VideoRecord, present, training_pairs

__all__ = [
           "OFFICIAL_SIZES",
           "SPLITS",
           "VideoRecord",
           "present",
           "read_dataset",
           "read_split",
           "training_pairs",
]
