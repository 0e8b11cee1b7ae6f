"""Finding video files: one directory walk, then name look-ups per dataset convention.

Videos are searched under ``--videos DIR`` when given, else under the data root (which includes
its ``videos/`` folder), recursively, so unpacked archives such as the Frozen-in-Time
``MSRVTT/videos/all/`` work as they are. Hidden folders (``.eabench-cache``) are skipped.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path, PurePosixPath, PureWindowsPath

from harness.errors import DataError

__all__ = ["VideoIndex", "safe_relative_name", "search_dirs"]

# Files that are never videos; everything else may be one (DiDeMo has '.null' and bare-dot names).
_NOT_VIDEO = {".json", ".csv", ".txt", ".md", ".npy", ".npz", ".py", ".pkl", ".zip", ".tar", ".gz",
              ".jsonl", ".db", ".tmp", ".part", ".yaml", ".yml"}
# Preference when several files share a stem (ActivityNet downloads mix containers).
_EXT_ORDER = {".mp4": 0, ".mkv": 1, ".webm": 2}


def search_dirs(root: Path, videos: Path | None) -> list[Path]:
    if videos is not None:
        return [Path(videos)]
    root = Path(root)
    # The root walk already covers root/videos; list it so error messages name it.
    return [root, root / "videos"]


def safe_relative_name(name: object, file: Path, record: str, fieldname: str) -> str:
    """Reject annotation-supplied video names that would leave the data root."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{file}: record {record}: field {fieldname!r} must be a non-empty string, "
                        f"got {name!r}")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts \
            or ".." in win.parts or "\x00" in name:
        raise DataError(f"{file}: record {record}: field {fieldname!r} = {name!r} would leave the "
                        "data root (absolute path or '..'); use a file name relative to the "
                        "videos folder")
    return name


class VideoIndex:
    """All files below the searched folders, indexed by file name and by stem."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        self.by_stem: dict[str, list[Path]] = defaultdict(list)
        seen: set[str] = set()
        visited: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every real folder walked
        for d in self.dirs:
            if not d.is_dir():
                continue
            for cur, subdirs, files in os.walk(d, followlinks=True):
                # Symlinks are followed (datasets are often linked in from another disk), so a
                # link back up the tree would loop forever: walk each real folder once.
                here = os.stat(cur)
                if (here.st_dev, here.st_ino) in visited:
                    subdirs[:] = []
                    continue
                visited.add((here.st_dev, here.st_ino))
                subdirs[:] = sorted(s for s in subdirs if not s.startswith(".")
                                    and _real_dir_key(os.path.join(cur, s)) not in visited)
                for f in sorted(files):
                    p = Path(cur) / f
                    key = os.path.realpath(p)
                    if key in seen or f.startswith("."):
                        continue
                    seen.add(key)
                    self.by_name[f].append(p)
                    suffix = _suffix(f)
                    if suffix.lower() in _NOT_VIDEO:
                        continue
                    self.by_stem[f[: len(f) - len(suffix)]].append(p)

    def describe(self) -> str:
        return ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in self.dirs)

    def by_exact_name(self, name: str) -> Path | None:
        """DiDeMo: the full file name, extension and trailing dot included."""
        if "/" in name or "\\" in name:
            for d in self.dirs:
                p = d / name
                if p.is_file():
                    return p
            return None
        hits = self.by_name.get(name)
        return hits[0] if hits else None

    def by_stem_ext(self, stem: str, exts: tuple[str, ...]) -> Path | None:
        """MSR-VTT: ``videoN`` with .mp4, then .webm."""
        for ext in exts:
            hits = self.by_name.get(stem + ext)
            if hits:
                return hits[0]
        return None

    def by_any_ext(self, stems: tuple[str, ...]) -> Path | None:
        """ActivityNet: any of the stems (with / without ``v_``), any container extension."""
        for stem in stems:
            hits = self.by_stem.get(stem)
            if hits:
                return min(hits, key=lambda p: (_EXT_ORDER.get(_suffix(p.name).lower(), 9), str(p)))
        return None


def _real_dir_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a dangling link: os.walk skips it anyway
        return None
    return (st.st_dev, st.st_ino)


def _suffix(name: str) -> str:
    # Path.suffix treats "abc." as having no suffix; for us the bare dot is the extension.
    i = name.rfind(".")
    return name[i:] if i > 0 else ""
