"""One builder's view of a cache folder's ``index.jsonl`` / ``failed.jsonl``, shared with others.

Several processes may build the same cache at once (two ``eabench data cache`` runs, a study's
workers starting together). They share the work through POSIX record locks on ``.lock`` in the
cache folder:

- a builder *claims* a video by locking one byte of ``.lock`` at an offset derived from the id
  (non-blocking; a video claimed by another builder is put aside and looked at again later);
- after claiming, it re-reads what the others appended, so a video finished (or failed) by
  another builder in the meantime is not decoded again;
- every append to the two journals happens under the lock of byte 0, one ``write`` per line.

The kernel drops a process's locks when it dies, so a killed builder never blocks the others.
Where ``fcntl`` is missing (Windows) there is no locking: one builder at a time.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.data.frame_cache_layout import FAILED, INDEX, apply_index_line

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK", "Journal"]

LOCK = ".lock"
_IDS = 1 << 40  # claim offsets start here; byte 0 guards appends


def _offset(video_id: str) -> int:
    return _IDS + int(hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:15], 16)


class Journal:
    """The last index line and the last failure line per video id, kept up to date by
    :meth:`refresh`; :meth:`append` writes lines that every other builder will read."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[str, dict[str, Any]] = {}    # id -> last index line (entry or removal)
        self.failed: dict[str, dict[str, Any]] = {}   # id -> last failed.jsonl line
        self._pos = {INDEX: 0, FAILED: 0}
        self._held: set[str] = set()
        self._fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        with self._appending():
            for name in (INDEX, FAILED):  # an interrupted write may have left a cut line
                path = folder / name
                if path.is_file() and path.stat().st_size:
                    with path.open("rb+") as f:
                        f.seek(-1, os.SEEK_END)
                        if f.read(1) != b"\n":
                            f.write(b"\n")
        self.refresh()

    # ------------------------------------------------------------ locks
    def _lock(self, offset: int, block: bool) -> bool:
        if fcntl is None:
            return True
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB), 1, offset)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _unlock(self, offset: int) -> None:
        if fcntl is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    @contextmanager
    def _appending(self) -> Iterator[None]:
        self._lock(0, block=True)
        try:
            yield
        finally:
            self._unlock(0)

    def claim(self, video_id: str, *, block: bool = False) -> bool:
        """Lock ``video_id`` for this builder; False if another builder holds it (non-blocking)."""
        if not self._lock(_offset(video_id), block):
            return False
        self._held.add(video_id)
        return True

    def release(self, video_id: str) -> None:
        if video_id in self._held:
            self._held.discard(video_id)
            self._unlock(_offset(video_id))

    def close(self) -> None:
        for vid in list(self._held):
            self.release(vid)
        os.close(self._fd)

    # ------------------------------------------------------------ journals
    def refresh(self) -> None:
        """Read the lines other builders appended since the last call (complete lines only)."""
        for name, table in ((INDEX, self.index), (FAILED, self.failed)):
            path = self.folder / name
            try:
                with path.open("rb") as f:
                    f.seek(self._pos[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self._pos[name] += end
            for raw in data[:end].splitlines():
                try:
                    line = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):  # a line cut by an interruption
                    continue
                if not isinstance(line, dict):
                    continue
                if name == INDEX:
                    apply_index_line(table, line)
                elif isinstance(line.get("id"), str):
                    table[line["id"]] = line

    def append(self, name: str, lines: list[dict[str, Any]], *, skip_known: bool = False) -> None:
        """Append ``lines`` to ``name``; ``skip_known`` drops failure lines whose id already has
        that reason as its last failure (two builders noting the same missing video)."""
        if not lines:
            return
        with self._appending():
            if skip_known:
                self.refresh()
                lines = [x for x in lines if self.failed.get(x["id"], {}).get("reason") != x["reason"]]
                if not lines:
                    return
            data = "".join(json.dumps(x) + "\n" for x in lines).encode("utf-8")
            fd = os.open(self.folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:  # one write per call in practice; loop in case of a short write
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
