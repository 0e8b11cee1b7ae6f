"""The frame cache: every video decoded once, read back as training/evaluation batches.

Layout (documented for users in docs/DATA.md)::

    <cache_root>/<dataset>/<FrameSettings.key()>/
        meta.json       settings, dataset, format version
        index.jsonl     one JSON line per finished video: id, file, n (real frames), times,
                        window, source path, bytes; appended as each video finishes
        failed.jsonl    one JSON line per unreadable or missing video: id, reason
        frames/ab/<sha1(id)[:20]>.npy   uint8 [n, 3, S, S], the n <= max_frames real frames

Resumable: a video is finished when its line is in ``index.jsonl``; its ``.npy`` is written to a
temporary file and renamed first, so an interrupted build never leaves a half-written frame file
behind an index line. A later build skips finished videos and retries failed ones.
Reads: one ``readinto`` per video straight into a preallocated (optionally pinned) uint8 batch;
normalisation to CLIP mean/std happens in ``batch`` (on the target device when one is given).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.frames import FORMAT_VERSION, FrameSettings, decode_video, normalize
from harness.data.records import VideoRecord
from harness.errors import DataError

__all__ = ["BuildReport", "FrameCache", "cache_dir", "default_cache_root"]

INDEX, FAILED, META = "index.jsonl", "failed.jsonl", "meta.json"


def default_cache_root(data_root: str | Path | None = None) -> Path:
    """``$EABENCH_CACHE`` if set, else ``<data_root>/.eabench-cache``."""
    env = os.environ.get("EABENCH_CACHE")
    if env:
        return Path(env)
    if data_root is None:
        raise DataError("no cache root: set EABENCH_CACHE or pass --cache-root DIR")
    return Path(data_root) / ".eabench-cache"


def cache_dir(cache_root: str | Path, dataset: str, settings: FrameSettings) -> Path:
    return Path(cache_root) / dataset / settings.key()


@dataclass
class BuildReport:
    done: int = 0                     # decoded in this build
    skipped_existing: int = 0         # already in the cache
    failed: dict[str, str] = field(default_factory=dict)  # video_id -> reason (incl. missing)
    missing: int = 0                  # listed without a file (also in ``failed``)
    frames: int = 0                   # real frames written in this build
    seconds: float = 0.0
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped_existing": self.skipped_existing,
                "failed": len(self.failed), "missing": self.missing,
                "unreadable": len(self.failed) - self.missing, "frames": self.frames,
                "seconds": round(self.seconds, 3), "path": str(self.path),
                "failures": self.failed}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
    return out


def _end_with_newline(path: Path) -> None:
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _file_for(video_id: str) -> str:
    h = hashlib.sha1(video_id.encode("utf-8")).hexdigest()
    return f"{h[:2]}/{h[:20]}.npy"


def _window(rec: VideoRecord) -> list[float | None]:
    return [rec.start, rec.end]


def _decode_job(job: tuple[str, str, float | None, float | None, FrameSettings, str, str]
                ) -> dict[str, Any]:
    """Worker: decode one video and write its frames atomically. Never raises."""
    vid, src, start, end, settings, out_dir, rel = job
    try:
        clip = decode_video(src, settings, start, end)
        n = int(clip.mask.sum())
        dest = Path(out_dir) / "frames" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            np.save(f, np.ascontiguousarray(clip.frames[:n]))
            size = f.tell()
        os.replace(tmp, dest)
        offset = size - clip.frames[:n].nbytes  # where the pixels start: reads skip the header
        return {"id": vid, "file": rel, "n": n, "times": [round(float(t), 4) for t in clip.times[:n]],
                "window": [start, end], "src": src, "bytes": size, "offset": offset}
    except Exception as exc:  # noqa: BLE001 - one bad video must never end a long build
        msg = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        return {"id": vid, "error": msg, "src": src}


def _worker_init() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    torch.set_num_threads(1)


class FrameCache:
    """Read side of the cache; ``FrameCache.build`` fills it."""

    def __init__(self, path: Path, settings: FrameSettings, entries: dict[str, dict[str, Any]],
                 failed: dict[str, str]) -> None:
        self.path = path
        self.settings = settings
        self._entries = entries
        self._failed = failed
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
        entries = {e["id"]: e for e in _read_jsonl(path / INDEX) if "id" in e}
        failed = {e["id"]: e.get("reason", "?") for e in _read_jsonl(path / FAILED)
                  if e.get("id") not in entries}
        return cls(path, settings, entries, failed)

    @property
    def failed(self) -> dict[str, str]:
        return dict(self._failed)

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
                            f"frame size ({got} of {view.nbytes} bytes); rebuild the cache")
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
        """Decode every listed video not yet cached. Missing/corrupt videos are recorded in
        ``failed.jsonl`` and counted, never fatal. Ctrl-C keeps every finished video."""
        records = list(records)
        if dataset is None:
            dataset = next((r.extra.get("dataset") for r in records if r.extra.get("dataset")), None)
            if dataset is None:
                raise DataError("FrameCache.build: pass dataset=NAME (records carry none)")
        out = cache_dir(cache_root, dataset, settings)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "dataset": dataset, "key": settings.key(),
                "settings": {"max_frames": settings.max_frames, "fps": settings.fps,
                             "slice_framepos": settings.slice_framepos,
                             "image_size": settings.image_size},
                "frame_file": "uint8 .npy [n, 3, S, S], n <= max_frames real frames"}
        if not (out / META).is_file():
            tmp = out / f".{META}.tmp"
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, out / META)

        finished = {e["id"]: e for e in _read_jsonl(out / INDEX) if "id" in e}
        report = BuildReport(path=out)
        jobs = []
        seen: set[str] = set()
        failures: list[dict[str, Any]] = []
        for r in records:
            if r.video_id in seen:
                continue
            seen.add(r.video_id)
            e = finished.get(r.video_id)
            if e is not None and e.get("window") == _window(r) \
                    and (out / "frames" / e["file"]).is_file():
                report.skipped_existing += 1
                continue
            if r.path is None:
                report.failed[r.video_id] = "missing: no video file found"
                report.missing += 1
                failures.append({"id": r.video_id, "reason": report.failed[r.video_id]})
                continue
            jobs.append((r.video_id, str(r.path), r.start, r.end, settings, str(out),
                         _file_for(r.video_id)))

        t0 = time.perf_counter()
        for name in (INDEX, FAILED):
            _end_with_newline(out / name)  # an interrupted write may have left a cut line
        with open(out / INDEX, "a", encoding="utf-8") as index_f, \
                open(out / FAILED, "a", encoding="utf-8") as failed_f:
            failed_f.writelines(json.dumps(fl) + "\n" for fl in failures)
            failed_f.flush()

            def record(res: dict[str, Any]) -> None:
                if "error" in res:
                    report.failed[res["id"]] = res["error"]
                    failed_f.write(json.dumps({"id": res["id"], "reason": res["error"],
                                               "src": res["src"]}) + "\n")
                    failed_f.flush()
                else:
                    report.done += 1
                    report.frames += res["n"]
                    index_f.write(json.dumps(res) + "\n")
                    index_f.flush()
                if on_result is not None:
                    on_result(res)

            with _progress(progress, len(jobs), dataset) as advance:
                # a process pool pays a torch import per worker: worth it only for real work
                if workers <= 1 or len(jobs) < 2 * workers:
                    for job in jobs:
                        record(_decode_job(job))
                        advance()
                else:
                    _run_pool(jobs, workers, record, advance)
        report.seconds = time.perf_counter() - t0
        return report


def _run_pool(jobs: list[Any], workers: int, record: Callable[[dict[str, Any]], None],
              advance: Callable[[], None]) -> None:
    import multiprocessing as mp

    # fork where available, as torch's DataLoader does (cheap: no re-import of torch per
    # worker); the initializer sets one intra-op thread, which keeps forked OpenMP safe.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method),
                             initializer=_worker_init)
    pending: set[Future[dict[str, Any]]] = set()
    it = iter(jobs)
    try:
        for job in it:
            pending.add(ex.submit(_decode_job, job))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                record(fut.result())
                advance()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(ex.submit(_decode_job, nxt))
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


class _progress:
    """The shared harness progress display (a Rich bar on a terminal, heartbeat lines elsewhere)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._r: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled or self.total == 0:
            return lambda: None
        from harness.console import Reporter

        self._r = Reporter(heartbeat_s=15.0).__enter__()
        task = self._r.add(f"decoding {self.label}", total=self.total)
        return lambda: self._r.advance(task, 1, items=1)

    def __exit__(self, *exc: object) -> None:
        if self._r is not None:
            self._r.__exit__(*exc)
