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
