"""Data-test helpers: one fixture per dataset per session (import explicitly)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.data.fixtures import make_fixture


def _make(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp(f"fixture_{name}") / name
    manifest = make_fixture(name, root, videos=8, seed=3)
    return root, manifest


@pytest.fixture(scope="session")
def msrvtt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _make(tmp_path_factory, "msrvtt")


@pytest.fixture(scope="session")
def activitynet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _make(tmp_path_factory, "activitynet")


@pytest.fixture(scope="session")
def didemo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return _make(tmp_path_factory, "didemo")


def copy_root(src: Path, dest: Path) -> Path:
    """A writable copy of a session fixture (for tests that edit annotation files)."""
    shutil.copytree(src, dest)
    return dest


def rewrite_json(path: Path, fn: Any) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def build_in_child(root: str, dataset: str, splits: tuple[str, ...], cache_root: str, settings: Any,
                   delay_s: float, barrier: Any, queue: Any) -> None:
    """A frame-cache builder in its own (spawned) process: each decode takes ``delay_s`` longer,
    so two of them started at the same ``barrier`` overlap. Puts its report dict on ``queue``.
    Lives here, not in a test module, so the child imports little."""
    import time

    import harness.data.frame_cache_build as build_mod
    from harness.data import read_dataset
    from harness.data.frame_cache import FrameCache

    real = build_mod._decode_job

    def slow(job: Any) -> dict[str, Any]:
        time.sleep(delay_s)
        return real(job)

    build_mod._decode_job = slow
    recs = [r for s in splits for r in read_dataset(dataset, root, s)]
    import torchvision.transforms.v2.functional  # noqa: F401 - the slow import before the start line
    barrier.wait(timeout=300)
    queue.put(FrameCache.build(recs, settings, cache_root, workers=1, progress=False).to_dict())
