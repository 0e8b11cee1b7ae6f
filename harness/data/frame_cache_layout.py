"""Where the frame cache lives on disk, and how its index files are read.

Layout (documented for users in docs/DATA.md)::

    <cache_root>/<dataset>/<FrameSettings.key()>/
        meta.json       settings, dataset, format version, index format
        index.jsonl     one JSON line per finished video: id, file, n (real frames), times,
                        window, source path, bytes, offset of the pixels, and the source's
                        size and mtime (src_size, src_mtime_ns); appended as each video
                        finishes. A later line for the same id replaces an earlier one; a line
                        {"removed": id, "reason": ...} withdraws the id (its rebuild failed).
        failed.jsonl    one JSON line per unreadable or missing video: id, reason, source key
        .lock           POSIX record locks shared by concurrent builders
        frames/ab/<sha1(id)[:20]>.npy   uint8 [n, 3, S, S], the n <= max_frames real frames

An entry is *stale* (not cached: rebuilt by the next build, skipped by readers until then) when
its frame file is missing or does not have the size the index recorded, or when its source
video's size or mtime differ from the recorded ones. Lines written before index format 2 carry
no source key; they stay valid unless the source was modified after its frame file was written.

Written by :mod:`harness.data.frame_cache_build`, read by :mod:`harness.data.frame_cache`.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from harness.data.frames import FrameSettings
from harness.errors import DataError

__all__ = [
    "FAILED",
    "INDEX",
    "INDEX_FORMAT",
    "META",
    "apply_index_line",
    "cache_dir",
    "default_cache_root",
    "entry_problem",
    "frame_file",
    "read_index",
    "read_jsonl",
    "source_key",
    "source_stat",
]

INDEX, FAILED, META = "index.jsonl", "failed.jsonl", "meta.json"
INDEX_FORMAT = 2  # 2: index lines carry the source key (src_size, src_mtime_ns); removal lines


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


def frame_file(video_id: str) -> str:
    """Path of a video's frame file under ``frames/`` (hashed: ids may hold any character)."""
    h = hashlib.sha1(video_id.encode("utf-8")).hexdigest()
    return f"{h[:2]}/{h[:20]}.npy"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it is absent), skipping a line cut by an interruption."""
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


def apply_index_line(index: dict[str, dict[str, Any]], line: dict[str, Any]) -> None:
    """Fold one index line into ``index`` (id -> the last line about it)."""
    if isinstance(line.get("id"), str) and "file" in line:
        index[line["id"]] = line
    elif isinstance(line.get("removed"), str):
        index[line["removed"]] = line


def read_index(path: Path) -> dict[str, dict[str, Any]]:
    """id -> the last ``index.jsonl`` line about it (an entry, or a removal without "file")."""
    index: dict[str, dict[str, Any]] = {}
    for line in read_jsonl(path):
        if isinstance(line, dict):
            apply_index_line(index, line)
    return index


def source_stat(src: str | Path | None) -> os.stat_result | None:
    """The source video's stat, or None when it is gone (then an entry cannot be checked)."""
    if src is None:
        return None
    try:
        return os.stat(src)
    except OSError:
        return None


def source_key(st: os.stat_result) -> dict[str, int]:
    """What an index line records about its source: a changed size or mtime means new content."""
    return {"src_size": int(st.st_size), "src_mtime_ns": int(st.st_mtime_ns)}


def entry_problem(entry: dict[str, Any], frames: Path, frame_bytes: int,
                  source: os.stat_result | None) -> str | None:
    """Why a cached entry cannot be used (its kind before a colon), or None if it is sound.

    ``frames`` is the cache's ``frames/`` folder, ``frame_bytes`` = 3*S*S, ``source`` the stat of
    the video it was decoded from (None: unknown, not checked).
    """
    try:
        have = (frames / entry["file"]).stat()
    except OSError:
        return "frame file missing"
    if "bytes" in entry:
        want = int(entry["bytes"])
        if "offset" in entry and want != int(entry["offset"]) + int(entry["n"]) * frame_bytes:
            return f"frame file damaged: the index line says {want} bytes for {entry['n']} frames"
        if have.st_size != want:
            return f"frame file damaged: {have.st_size} of {want} bytes"
    if source is not None:
        if "src_size" in entry:
            if (source.st_size, source.st_mtime_ns) != (entry["src_size"], entry.get("src_mtime_ns")):
                return "source changed: the video's size or mtime differ from when it was decoded"
        elif source.st_mtime_ns > have.st_mtime_ns:
            return "source changed: the video was modified after its frames were written"
    return None
