"""The frame cache, read side: every video decoded once, read back as training/evaluation batches.

Reads: one ``readinto`` per video straight into a preallocated (optionally pinned) uint8 batch;
normalisation to CLIP mean/std happens in ``batch`` (on the target device when one is given).
The on-disk layout is in :mod:`harness.data.frame_cache_layout`; ``FrameCache.build`` fills the
cache (:mod:`harness.data.frame_cache_build`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.frame_cache_build import BuildReport, build_frame_cache
from harness.data.frame_cache_layout import (
    FAILED,
    INDEX,
    META,
    cache_dir,
    default_cache_root,
    entry_problem,
    read_index,
    read_jsonl,
    source_key,
    source_stat,
)
from harness.data.frames import FrameSettings, normalize
from harness.data.records import VideoRecord
from harness.errors import DataError

__all__ = ["BuildReport", "FrameCache", "cache_dir", "default_cache_root"]


class FrameCache:
    """Read side of the cache; ``FrameCache.build`` fills it."""

    def __init__(self, path: Path, settings: FrameSettings, entries: dict[str, dict[str, Any]],
                 failed: dict[str, str], stale: dict[str, str] | None = None) -> None:
        self.path = path
        self.settings = settings
        self._entries = entries
        self._failed = failed
        self._stale = stale or {}
        self.threads = min(8, os.cpu_count() or 1)  # readers for large batches
        self._pool: Any = None
        self._pool_pid: int | None = None
        self._pinned: Any = None

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, cache_root: str | Path, settings: FrameSettings, dataset: str) -> FrameCache:
        path = cache_dir(cache_root, dataset, settings)
        if not (path / META).is_file():
            raise DataError(f"{path}: no frame cache for {dataset} with settings {settings.key()}; "
                            f"build it with `eabench data cache {dataset} --root DIR`")
        index = read_index(path / INDEX)
        frame_bytes = 3 * settings.image_size ** 2
        entries: dict[str, dict[str, Any]] = {}
        stale: dict[str, str] = {}
        for vid, line in index.items():
            if "file" not in line:
                continue
            why = entry_problem(line, path / "frames", frame_bytes, source_stat(line.get("src")))
            if why is None:
                entries[vid] = line
            else:
                stale[vid] = why
        failed: dict[str, str] = {}
        for e in read_jsonl(path / FAILED):
            vid = e.get("id") if isinstance(e, dict) else None
            last = index.get(vid) if isinstance(vid, str) else None
            if not isinstance(vid, str) or (last is not None and "file" in last):
                continue  # a later index line (the video decoded after all) knows better
            src = source_stat(e.get("src")) if "src_size" in e else None
            if src is not None and source_key(src) != {k: e.get(k) for k in ("src_size", "src_mtime_ns")}:
                failed.pop(vid, None)  # the video changed since it failed: worth another try
                continue
            failed[vid] = e.get("reason", "?")
        return cls(path, settings, entries, failed, stale)

    @property
    def failed(self) -> dict[str, str]:
        return dict(self._failed)

    @property
    def stale(self) -> dict[str, str]:
        """Entries that are not used (frame file missing or damaged, source changed): id -> why.
        The next ``build`` decodes them again."""
        return dict(self._stale)

    @property
    def video_ids(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def size_bytes(self) -> int:
        return sum(int(e.get("bytes", 0)) for e in self._entries.values())

    def _entry(self, video_id: str) -> dict[str, Any]:
        try:
            return self._entries[video_id]
        except KeyError:
            why = self._failed.get(video_id)
            raise DataError(f"{self.path}: video {video_id!r} is not in the frame cache"
                            + (f" (it failed: {why})" if why else
                               f" (stale: {self._stale[video_id]}; run the build again)"
                               if video_id in self._stale else
                               " (build the cache for this split first)")) from None

    # ------------------------------------------------------------ reading
    def _read_into(self, video_id: str, out: np.ndarray) -> int:
        """Copy one video's real frames into ``out`` ([T,3,S,S] uint8), zero the rest; returns n.

        One open + seek + readinto per video: the index knows the frame count and where the
        pixels start, so the .npy header is not parsed on the hot path.
        """
        e = self._entry(video_id)
        n = int(e["n"])
        view = memoryview(out[:n]).cast("B")
        with open(self.path / "frames" / e["file"], "rb", buffering=0) as f:
            if "offset" in e:
                f.seek(int(e["offset"]))
            else:  # written by an older build: parse the header
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                read_header(f)
            got = f.readinto(view)
        if got != view.nbytes:
            raise DataError(f"{self.path}: frame file of {video_id!r} is truncated or has another "
                            f"frame size ({got} of {view.nbytes} bytes); build the cache again (`eabench data "
                            f"cache`, or any training run): it re-decodes damaged entries")
        out[n:] = 0
        return n

    def get(self, video_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 frames [T,3,S,S] zero-padded, bool mask [T], float32 times [T] NaN-padded)."""
        s, t_max = self.settings.image_size, self.settings.max_frames
        frames = np.zeros((t_max, 3, s, s), dtype=np.uint8)
        n = self._read_into(video_id, frames)
        mask = np.zeros(t_max, dtype=bool)
        mask[:n] = True
        times = np.full(t_max, np.nan, dtype=np.float32)
        times[:n] = self._entries[video_id]["times"]
        return frames, mask, times

    def times(self, video_id: str) -> np.ndarray:
        t = np.full(self.settings.max_frames, np.nan, dtype=np.float32)
        src = self._entry(video_id)["times"]
        t[: len(src)] = src
        return t

    def batch_uint8(self, video_ids: Sequence[str], *, pin_memory: bool = False,
                    out: Any = None):  # type: ignore[no-untyped-def]
        """(uint8 tensor [B,T,3,S,S], float32 mask [B,T]) without normalisation.

        Large batches are read by a small thread pool (``readinto`` releases the GIL).
        ``out`` reuses a preallocated uint8 tensor of the right shape.
        """
        import torch

        s, t_max = self.settings.image_size, self.settings.max_frames
        shape = (len(video_ids), t_max, 3, s, s)
        pix = out if out is not None else torch.empty(shape, dtype=torch.uint8,
                                                      pin_memory=pin_memory)
        if tuple(pix.shape) != shape or pix.dtype != torch.uint8:
            raise ValueError(f"batch_uint8: out has shape {tuple(pix.shape)}, need {shape} uint8")
        arr = pix.numpy()
        counts = np.zeros(len(video_ids), dtype=np.int64)

        def read(b: int) -> None:
            counts[b] = self._read_into(video_ids[b], arr[b])

        if len(video_ids) >= 16 and self.threads > 1:
            list(self._thread_pool().map(read, range(len(video_ids))))
        else:
            for b in range(len(video_ids)):
                read(b)
        mask = (torch.arange(t_max)[None, :] < torch.from_numpy(counts)[:, None]).to(torch.float32)
        return pix, mask

    def _thread_pool(self) -> Any:
        # one pool per process: a DataLoader worker forked from us must not reuse ours
        if self._pool is None or self._pool_pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="frame-cache")
            self._pool_pid = os.getpid()
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        # picklable for spawned DataLoader workers: drop the thread pool and pinned buffer
        state = dict(self.__dict__)
        state.update(_pool=None, _pool_pid=None, _pinned=None)
        return state

    def batch(self, video_ids: Sequence[str], device: Any = None):  # type: ignore[no-untyped-def]
        """(float32 pixels [B,T,3,S,S] CLIP-normalised, float32 mask [B,T]) on ``device``.

        With a CUDA device the uint8 batch goes through a reused pinned buffer and is normalised
        on the GPU (4x less host-to-device traffic than float32). Padded frames are exactly zero
        after normalisation (CLIP4Clip's zero padding).
        """
        import torch

        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda":
            s, t_max = self.settings.image_size, self.settings.max_frames
            shape = (len(video_ids), t_max, 3, s, s)
            if self._pinned is None or tuple(self._pinned.shape) != shape:
                self._pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            pix, mask = self.batch_uint8(video_ids, out=self._pinned)
            # a blocking copy: the pinned buffer is refilled by the next call
            pix, mask = pix.to(dev), mask.to(dev)
        else:
            pix, mask = self.batch_uint8(video_ids)
            pix, mask = pix.to(dev), mask.to(dev)
        return normalize(pix, mask), mask

    # ------------------------------------------------------------ building
    @staticmethod
    def build(records: Iterable[VideoRecord], settings: FrameSettings, cache_root: str | Path,
              workers: int = 1, *, dataset: str | None = None, progress: bool = True,
              on_result: Callable[[dict[str, Any]], None] | None = None,
              ) -> BuildReport:
        """Decode every listed video not yet cached, or cached but stale (``self.stale``), see
        ``frame_cache_build.build_frame_cache``. Missing/corrupt videos and dead decode workers
        are recorded in ``failed.jsonl`` and counted, never fatal. Builders running at the same
        time share the work. Ctrl-C keeps every finished video."""
        return build_frame_cache(records, settings, cache_root, workers, dataset=dataset,
                                 progress=progress, on_result=on_result)
