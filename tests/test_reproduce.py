"""`eabench reproduce`: argument checks, and a short end-to-end run (--small) to the report page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ConfigError
from reports.reproduce import SYNTHETIC_TABLES, plan_reproduction


def test_real_datasets_need_root_and_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--root"):
        plan_reproduction("msrvtt")
    with pytest.raises(ConfigError, match="--weights"):
        plan_reproduction("didemo", root=tmp_path)
    w = tmp_path / "ViT-B-32.pt"
    w.write_bytes(b"x")
    plan = plan_reproduction("activitynet", root=tmp_path, weights=str(w))
    assert plan.protocol == "paper"
    assert "meanP" in plan.tables and not any(t.startswith("ratio") for t in plan.tables)  # no AN ablations
    with pytest.raises(ConfigError, match="unknown"):
        plan_reproduction(tables=["noSuchTable"])


def test_synthetic_defaults() -> None:
    plan = plan_reproduction()
    assert plan.protocol == "frozen" and plan.tables == SYNTHETIC_TABLES
    assert plan.root == Path("data") / "synthetic"
    small = plan_reproduction(small=True, sets=[("lr", "0.01")])
    assert ("epochs", "1") in small.sets and ("lr", "0.01") in small.sets and len(small.tables) <= 2
    assert small.study_name(small.tables[0]).endswith("-synthetic-frozen-small")


def test_library_code_never_drives_the_command_line() -> None:
    """reports.reproduce calls the data, studies and reports functions, never `harness.cli.main`."""
    import reports.reproduce

    text = Path(reports.reproduce.__file__).read_text()
    assert "harness.cli" not in text and "argparse" not in text


@pytest.mark.slow
def test_reproduce_small_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    # every run logged ranks.npz: the table carries intervals and tests, not "n/a"
    assert "95 % CI" in html and "p (Holm)" in html and "smallest Δ T2V R@1" in html
    assert "n/a: the row or its baseline has no per-query ranks" not in html
    assert f"http://127.0.0.1:5000/#/experiments/{out['experiment_id']}/runs" in html
    assert "p (Wilcoxon)" in html  # the share of weight on the relevant frames, with its test
    rep = out["report"]
    assert rep["tables"] and all(Path(p).is_file() for t in rep["tables"] for p in t["files"].values())
    pngs = [Path(p) for f in rep["figures"] for p in f["files"] if p.endswith(".png")]
    assert any("video_" in p.name for p in pngs)  # frame-weight figures from real training runs
    for p in pngs:
        assert p.is_file()
        assert p.relative_to(index.parent).as_posix() in html
    assert (tmp_path / "runs" / "mlflow.db").is_file()
