"""`eabench reproduce`: argument checks, and a short end-to-end run (--small) to the report page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.cli import build_parser, main
from harness.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["reproduce", *argv])


def test_real_datasets_need_root_and_weights(tmp_path: Path) -> None:
    from reports.reproduce import plan_for

    with pytest.raises(ConfigError, match="--root"):
        plan_for(_args("--dataset", "msrvtt"))
    with pytest.raises(ConfigError, match="--weights"):
        plan_for(_args("--dataset", "didemo", "--root", str(tmp_path)))
    w = tmp_path / "ViT-B-32.pt"
    w.write_bytes(b"x")
    plan = plan_for(_args("--dataset", "activitynet", "--root", str(tmp_path), "--weights", str(w)))
    assert plan.protocol == "paper"
    assert "meanP" in plan.tables and not any(t.startswith("ratio") for t in plan.tables)  # no AN ablations
    with pytest.raises(ConfigError, match="unknown"):
        plan_for(_args("--tables", "noSuchTable"))


def test_synthetic_defaults() -> None:
    from reports.reproduce import SYNTHETIC_TABLES, plan_for

    plan = plan_for(_args())
    assert plan.protocol == "frozen" and plan.tables == SYNTHETIC_TABLES
    assert plan.root == Path("data") / "synthetic"
    small = plan_for(_args("--small"))
    assert ("epochs", "1") in small.sets and len(small.tables) <= 2
    assert small.study_name(small.tables[0]).endswith("-synthetic-frozen-small")


def _has_study_command() -> bool:
    from reports.reproduce import _subcommand_parser

    return _subcommand_parser(build_parser(), ["study", "table"]) is not None


@pytest.mark.slow
def test_reproduce_small_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not _has_study_command():
        pytest.skip("`eabench study table` is not installed yet")
    rc = main(
        [
            "reproduce",
            "--small",
            "--root",
            str(tmp_path / "data"),
            "--runs-root",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "report"),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    index = Path(out["index"])
    assert index.is_file() and index.parent == tmp_path / "report"
    html = index.read_text()
    assert "<table" in html and "What the synthetic benchmark measures" in html
    rep = out["report"]
    assert rep["tables"] and all(Path(p).is_file() for t in rep["tables"] for p in t["files"].values())
    pngs = [Path(p) for f in rep["figures"] for p in f["files"] if p.endswith(".png")]
    assert any("video_" in p.name for p in pngs)  # frame-weight figures from real training runs
    for p in pngs:
        assert p.is_file()
        assert p.relative_to(index.parent).as_posix() in html
    assert (tmp_path / "runs" / "mlflow.db").is_file()
