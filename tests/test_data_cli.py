"""`eabench data make-fixture | check | cache` end to end, as a user runs them."""
from __future__ import annotations

import json

import pytest

from harness.cli import main


def run_json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, json.loads(out)


@pytest.mark.parametrize("dataset,splits", [
    ("msrvtt", {"train9k": 5, "train7k": 3, "test1kA": 3}),    # 8 videos: 3 test (one missing)
    ("activitynet", {"train": 5, "val_1": 3}),
    ("didemo", {"train": 5, "test": 3}),
])
def test_fixture_check_cache(dataset, splits, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EABENCH_CACHE", raising=False)
    root = tmp_path / dataset
    assert main(["data", "make-fixture", dataset, "--out", str(root), "--videos", "8"]) == 0
    rc, res = run_json(capsys, ["data", "check", dataset, "--root", str(root), "--json"])
    assert rc == 0 and res["dataset"] == dataset and res["verdict"] == "usable"
    assert {s: e["listed"] for s, e in res["splits"].items()} == splits
    train, test = next(iter(splits)), list(splits)[-1]
    assert (res["splits"][train]["missing"], res["splits"][train]["unreadable"]) == (0, 1)
    assert (res["splits"][test]["missing"], res["splits"][test]["unreadable"]) == (1, 0)
    assert res["splits"][train]["official"] in (9000, 10009, 8392)
    for e in res["splits"].values():
        assert e["present"] == e["listed"] - e["missing"] and e["captions"] >= e["listed"]

    rc, rep = run_json(capsys, ["data", "cache", dataset, "--root", str(root), "--workers", "1",
                                "--max-frames", "4", "--image-size", "32", "--no-progress",
                                "--json"])
    assert rc == 0
    assert (rep["done"], rep["missing"], rep["unreadable"], rep["cached_total"]) == (6, 1, 1, 6)
    assert (root / ".eabench-cache" / dataset / rep["key"] / "index.jsonl").is_file()
    rc, rep = run_json(capsys, ["data", "cache", dataset, "--root", str(root), "--workers", "1",
                                "--max-frames", "4", "--image-size", "32", "--json"])
    assert (rep["done"], rep["skipped_existing"]) == (0, 6)   # resumable: nothing decoded twice


def test_check_unusable_root(tmp_path, capsys):
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n")
    rc, res = run_json(capsys, ["data", "check", "msrvtt", "--root", str(tmp_path), "--json"])
    assert rc == 1 and res["verdict"] == "unusable"
    assert "MSRVTT_data.json" in res["splits"]["train9k"]["error"]
    assert "MSRVTT_JSFUSION_test.csv" in res["splits"]["test1kA"]["error"]


def test_cache_error_names_searched_folders(tmp_path, capsys):
    root = tmp_path / "d"
    main(["data", "make-fixture", "didemo", "--out", str(root), "--videos", "6"])
    capsys.readouterr()
    rc = main(["data", "cache", "didemo", "--root", str(root), "--videos", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and "searched" in err and "nope" in err


def test_synthetic_fixture_check_cache(tmp_path, capsys, monkeypatch):
    pytest.importorskip("harness.synthetic")
    monkeypatch.delenv("EABENCH_CACHE", raising=False)
    root = tmp_path / "syn"
    assert main(["data", "make-fixture", "synthetic", "--out", str(root), "--videos", "10"]) == 0
    rc, res = run_json(capsys, ["data", "check", "synthetic", "--root", str(root), "--json"])
    assert rc == 0 and res["verdict"] == "ok"
    assert res["splits"]["train9k"]["listed"] + res["splits"]["test1kA"]["listed"] == 10
    rc, rep = run_json(capsys, ["data", "cache", "synthetic", "--root", str(root), "--json",
                                "--workers", "1"])
    assert rc == 0 and rep["done"] == 10 and rep["key"].startswith("T12_fps1_slice2_px32")


def test_synthetic_command_and_help(tmp_path, capsys):
    pytest.importorskip("harness.synthetic")
    out = tmp_path / "bench"
    assert main(["data", "synthetic", "--out", str(out), "--videos", "6", "--frames", "4",
                 "--no-pretrain-clip", "--seed", "1"]) == 0
    train = (out / "MSRVTT_train.9k.csv").read_text().split()
    test = (out / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()
    assert len(train) - 1 == 4 and len(test) - 1 == 2       # --videos 6: a fifth (>= 2) is test
    assert main(["data"]) == 2                               # no sub-command: help
