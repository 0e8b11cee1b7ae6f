"""Building the frame cache: every listed video decoded once, by worker processes.

Resumable: a video is finished when its line is in ``index.jsonl``; its ``.npy`` is written to a
temporary file and renamed first, so an interrupted build never leaves a half-written frame file
behind an index line. A later build skips finished videos, retries failed ones and rebuilds
*stale* entries (frame file missing or damaged, source video changed; see
:mod:`harness.data.frame_cache_layout`), saying how many and why. Missing and unreadable videos
are recorded in ``failed.jsonl`` and counted, never fatal; so is a decode worker that dies (the
OOM killer), see :mod:`harness.data.decode_pool`. Builders running at the same time share the
work through locks (:mod:`harness.data.frame_cache_journal`): each video is decoded once.
:meth:`harness.data.frame_cache.FrameCache.build` calls :func:`build_frame_cache`.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.decode_pool import DecodePool
from harness.data.frame_cache_journal import Journal
from harness.data.frame_cache_layout import (
    FAILED,
    INDEX,
    INDEX_FORMAT,
    META,
    cache_dir,
    entry_problem,
    frame_file,
    source_key,
    source_stat,
)
from harness.data.frames import FORMAT_VERSION, FrameSettings, decode_video
from harness.data.records import VideoRecord
from harness.errors import ConfigError, DataError

__all__ = ["BuildReport", "build_frame_cache", "check_workers"]

MISSING = "missing: no video file found"
Job = tuple[str, str, float | None, float | None, FrameSettings, str, str]


@dataclass
class BuildReport:
    done: int = 0                     # decoded in this build (rebuilt ones included)
    skipped_existing: int = 0         # already in the cache (or decoded by another builder)
    failed: dict[str, str] = field(default_factory=dict)  # video_id -> reason (incl. missing)
    missing: int = 0                  # listed without a file (also in ``failed``)
    frames: int = 0                   # real frames written in this build
    seconds: float = 0.0
    path: Path | None = None
    rebuilt: dict[str, str] = field(default_factory=dict)  # video_id -> why its entry was stale

    def rebuilt_reasons(self) -> dict[str, int]:
        """How many stale entries of each kind ("frame file damaged", "source changed", ...)."""
        return dict(Counter(why.split(":")[0] for why in self.rebuilt.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped_existing": self.skipped_existing,
                "failed": len(self.failed), "missing": self.missing,
                "unreadable": len(self.failed) - self.missing, "frames": self.frames,
                "rebuilt": len(self.rebuilt), "rebuilt_reasons": self.rebuilt_reasons(),
                "seconds": round(self.seconds, 3), "path": str(self.path),
                "failures": self.failed, "rebuilt_videos": self.rebuilt}


def check_workers(workers: object) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers (--workers) must be an integer >= 1, got {workers!r}")
    return workers


def _window(rec: VideoRecord) -> list[float | None]:
    return [rec.start, rec.end]


def _decode_job(job: Job) -> dict[str, Any]:
    """Worker: decode one video and write its frames atomically. Never raises."""
    vid, src, start, end, settings, out_dir, rel = job
    key: dict[str, int] = {}
    try:
        key = source_key(os.stat(src))  # before decoding: a change during the decode reads as stale
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
                "window": [start, end], "src": src, "bytes": size, "offset": offset, **key}
    except Exception as exc:  # noqa: BLE001 - one bad video must never end a long build
        msg = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        return {"id": vid, "error": msg, "src": src, **key}


def _write_meta(out: Path, dataset: str, settings: FrameSettings) -> None:
    meta_path = out / META
    try:
        old = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("index_format") == INDEX_FORMAT:
        return
    meta = {"format": FORMAT_VERSION, "index_format": INDEX_FORMAT, "dataset": dataset,
            "key": settings.key(),
            "settings": {"max_frames": settings.max_frames, "fps": settings.fps,
                         "slice_framepos": settings.slice_framepos,
                         "image_size": settings.image_size},
            "frame_file": "uint8 .npy [n, 3, S, S], n <= max_frames real frames"}
    tmp = out / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)


class _Build:
    """One build: what to decode, who decodes it, and what is written for each video."""

    def __init__(self, out: Path, settings: FrameSettings, journal: Journal, report: BuildReport,
                 on_result: Callable[[dict[str, Any]], None] | None) -> None:
        self.out, self.settings, self.journal, self.report = out, settings, journal, report
        self.on_result = on_result
        self.frame_bytes = 3 * settings.image_size ** 2
        self.records: dict[str, VideoRecord] = {}
        self.planned: dict[str, tuple[Any, Any]] = {}  # id -> (index line, failed line) at planning

    def problem(self, line: dict[str, Any] | None, rec: VideoRecord) -> str | None:
        """None if ``line`` is a sound cache entry for ``rec``, else why not."""
        if line is None or "file" not in line:
            return "not cached"
        if line.get("window") != _window(rec):
            return "window changed"
        return entry_problem(line, self.out / "frames", self.frame_bytes, source_stat(rec.path))

    def plan(self, records: Iterable[VideoRecord]) -> list[Job]:
        jobs: list[Job] = []
        missing: list[dict[str, Any]] = []
        for r in records:
            if r.video_id in self.records:
                continue
            self.records[r.video_id] = r
            line = self.journal.index.get(r.video_id)
            self.planned[r.video_id] = (line, self.journal.failed.get(r.video_id))
            why = self.problem(line, r)
            if why is None:
                self.report.skipped_existing += 1
                continue
            if line is not None and "file" in line:
                self.report.rebuilt[r.video_id] = why
            if r.path is None:
                self.report.rebuilt.pop(r.video_id, None)
                self.report.failed[r.video_id] = MISSING
                self.report.missing += 1
                missing.append({"id": r.video_id, "reason": MISSING})
                self._withdraw(r.video_id, MISSING)
                continue
            jobs.append((r.video_id, str(r.path), r.start, r.end, self.settings, str(self.out),
                         frame_file(r.video_id)))
        self.journal.append(FAILED, missing, skip_known=True)  # noted once, not once per build
        return jobs

    def _withdraw(self, vid: str, reason: str) -> None:
        line = self.journal.index.get(vid)
        if line is not None and "file" in line:
            self.journal.append(INDEX, [{"removed": vid, "reason": reason}])
            self.journal.index[vid] = {"removed": vid, "reason": reason}

    def settled(self, vid: str) -> bool:
        """After claiming: did another builder finish (or fail) this video since we planned?"""
        self.journal.refresh()
        planned_line, planned_fail = self.planned[vid]
        line, fail = self.journal.index.get(vid), self.journal.failed.get(vid)
        if line is not None and line is not planned_line:
            if "file" in line and self.problem(line, self.records[vid]) is None:
                self.report.skipped_existing += 1
                self.report.rebuilt.pop(vid, None)
                return True
            if "file" not in line:
                self.report.failed[vid] = str(line.get("reason", "?"))
                return True
        if fail is not None and fail is not planned_fail:
            self.report.failed[vid] = str(fail.get("reason", "?"))
            return True
        return False

    def record(self, job: Job, res: dict[str, Any]) -> None:
        vid, src = job[0], job[1]
        res.setdefault("id", vid)
        res.setdefault("src", src)
        try:
            if "error" in res:
                self.report.failed[vid] = res["error"]
                self.journal.append(FAILED, [{"id": vid, "reason": res["error"], "src": src,
                                              **{k: res[k] for k in ("src_size", "src_mtime_ns") if k in res}}])
                self._withdraw(vid, res["error"])
            else:
                self.report.done += 1
                self.report.frames += res["n"]
                self.journal.append(INDEX, [res])
            if self.on_result is not None:
                self.on_result(res)
        finally:
            self.journal.release(vid)

    def claimed(self, jobs: list[Job], busy: list[Job], advance: Callable[[], None]) -> Iterator[Job]:
        """The jobs this builder may decode now; those held by another builder go to ``busy``."""
        for job in jobs:
            if not self.journal.claim(job[0]):
                busy.append(job)
            elif self.settled(job[0]):
                self.journal.release(job[0])
                advance()
            else:
                yield job


def build_frame_cache(records: Iterable[VideoRecord], settings: FrameSettings, cache_root: str | Path,
                      workers: int = 1, *, dataset: str | None = None, progress: bool = True,
                      on_result: Callable[[dict[str, Any]], None] | None = None,
                      ) -> BuildReport:
    """Decode every listed video not yet cached (or cached but stale). Missing/corrupt videos
    and dead workers are recorded in ``failed.jsonl`` and counted, never fatal. Ctrl-C keeps
    every finished video."""
    check_workers(workers)
    records = list(records)
    if dataset is None:
        dataset = next((r.extra.get("dataset") for r in records if r.extra.get("dataset")), None)
        if dataset is None:
            raise DataError("FrameCache.build: pass dataset=NAME (records carry none)")
    out = cache_dir(cache_root, dataset, settings)
    out.mkdir(parents=True, exist_ok=True)
    _write_meta(out, dataset, settings)
    report = BuildReport(path=out)
    t0 = time.perf_counter()
    journal = Journal(out)
    pool: DecodePool | None = None
    try:
        build = _Build(out, settings, journal, report, on_result)
        todo = build.plan(records)
        # workers=1 decodes here, in this process (simplest to debug; nothing to fork). With more,
        # every video goes to a worker process, even a single retry: a worker the OOM killer
        # takes costs that one video, not the build.
        use_pool = workers > 1
        with _progress(progress, len(todo), dataset) as advance:
            while todo:
                busy: list[Job] = []
                claimed = build.claimed(todo, busy, advance)
                if use_pool:
                    pool = pool or DecodePool(workers, _decode_job)
                    pool.run(claimed, lambda job, res: (build.record(job, res), advance()))
                else:
                    for job in claimed:
                        build.record(job, _decode_job(job))
                        advance()
                if busy and len(busy) == len(todo):
                    # every remaining video is being decoded by another builder: wait for one
                    # (holding no claim of ours, so two builders never wait on each other)
                    journal.claim(busy[0][0], block=True)
                    journal.release(busy[0][0])
                todo = busy
    finally:
        if pool is not None:
            pool.close()
        journal.close()
    report.seconds = time.perf_counter() - t0
    return report


class _progress:
    """The shared harness progress display (a Rich bar on a terminal, heartbeat lines elsewhere)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self._r: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled or self.total == 0:
            return lambda: None
        from rich.markup import escape

        from harness.console import Reporter

        self._r = Reporter(heartbeat_s=15.0).__enter__()
        task = self._r.add(f"decoding {escape(self.label)}", total=self.total)
        return lambda: self._r.advance(task, 1, items=1)

    def __exit__(self, *exc: object) -> None:
        if self._r is not None:
            self._r.__exit__(*exc)
