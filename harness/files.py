"""Atomic, durable file writes: a kill or a power cut mid-write leaves the previous file (or none),
never half of one, and no temporary file outlives the process that wrote it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from harness.processes import process_alive

__all__ = ["clean_stale_temps", "save_atomic"]

_TMP = ".tmp"


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove ``<path>.tmp<PID>`` files left by writers that no longer run; returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f"{path.name}{_TMP}*"):
        suffix = tmp.name[len(path.name) + len(_TMP):]
        if suffix.isdigit() and not process_alive(int(suffix)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to ``<path>.tmp<PID>``, fsync it, rename it over ``path``, fsync the folder.

    Temporary files of dead writers (an earlier kill mid-write) are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = path.with_name(f"{path.name}{_TMP}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
