"""`eabench report compare`: paired comparison of two runs from their per-query ranks.

Planted ranks (N = 40, one caption per video, V2T = T2V): a ranks q0-9 first, q10-29 third, q30-39
eighth; b ranks q0-19 first, the rest as a. Hand numbers: R@1 a = 10/40 = 25 %, b = 20/40 = 50 %,
Δ = +25; discordant queries n01 = 10 (only b right), n10 = 0 -> exact McNemar p = 2 / 2^10 =
0.001953125. R@5 and R@10: both 75 % and 100 %, no discordant query -> Δ 0, interval [0, 0], p = 1.

A real tiny training run (the engine's fixture) logs ranks.npz whose ranks give back exactly the
best-epoch metrics it logged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest_engine import make_cfg, one_thread, store, synth  # noqa: F401
from conftest_reports import Store

from harness.cli import main

A = np.r_[[1] * 10, [3] * 20, [8] * 10]
B = np.r_[[1] * 20, [3] * 10, [8] * 10]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, str]]:
    s = Store(tmp_path_factory.mktemp("cmp"))
    parent = s.study("cmp-study", table="meanP")
    ids = {
        "a": s.run("meanP", t2v={"R1": 25.0}, ranks={"t2v": A}, study="cmp-study", parent=parent),
        "b": s.run("meanP_E4", t2v={"R1": 50.0}, ranks={"t2v": B}, study="cmp-study", parent=parent),
        # the same queries under other ids: another test set
        "other": s.run("meanP_A4", t2v={"R1": 50.0},
                       ranks={"t2v": B, "query_ids": [f"clip{i}#0" for i in range(40)]}),
        "old": s.run("meanP_A4", t2v={"R1": 50.0}),
        # the same test set, trained with the other numerics
        "ref": s.run("meanP", t2v={"R1": 25.0}, ranks={"t2v": A}, numerics="reference"),
        "fast": s.run("meanP_E4", t2v={"R1": 50.0}, ranks={"t2v": B}, numerics="fast"),
    }
    return s, ids


def _compare(s: Store, a: str, b: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    rc = main(["report", "compare", a, b, "--tracking-uri", s.uri, *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_compare_json_against_hand_numbers(planted, capsys) -> None:
    s, ids = planted
    rc, out, _ = _compare(s, ids["a"], ids["b"], capsys, "--json")
    assert rc == 0
    res = json.loads(out)  # stdout is exactly one JSON object
    assert res["a"] == ids["a"] and res["b"] == ids["b"] and res["queries"] == 40
    for d in ("t2v", "v2t"):
        r1 = res[d]["R1"]
        assert r1["a"] == pytest.approx(25.0) and r1["b"] == pytest.approx(50.0) and r1["delta"] == pytest.approx(25.0)
        assert r1["p_value"] == pytest.approx(0.001953125) and r1["test"] == "mcnemar-exact"
        lo, hi = r1["ci95"]
        assert 0 < lo < 25 < hi <= 50
        for k, val in (("R5", 75.0), ("R10", 100.0)):
            assert res[d][k]["a"] == pytest.approx(val) and res[d][k]["b"] == pytest.approx(val)
            assert res[d][k]["delta"] == 0 and res[d][k]["ci95"] == [0.0, 0.0] and res[d][k]["p_value"] == 1.0


def test_compare_study_rows_and_table_output(planted, capsys) -> None:
    s, ids = planted
    rc, out, _ = _compare(s, "cmp-study:meanP", "cmp-study:meanP_E4", capsys, "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["runs"] == {"a": [ids["a"]], "b": [ids["b"]]}
    assert res["t2v"]["R1"]["p_value"] == pytest.approx(0.001953125)
    rc, out, _ = _compare(s, ids["a"], ids["b"], capsys)
    assert rc == 0 and "R@1" in out and "+25.0" in out and "mcnemar-exact" in out
    rc, _, err = _compare(s, "cmp-study:nope", ids["b"], capsys)
    assert rc == 2 and "meanP_E4" in err  # names the variants the study has


def test_compare_refuses_other_test_set_and_missing_ranks(planted, capsys) -> None:
    s, ids = planted
    rc, out, err = _compare(s, ids["a"], ids["other"], capsys, "--json")
    assert rc == 2 and out == ""
    assert "same test set" in err and "video0#0" in err and "clip0#0" in err
    rc, _, err = _compare(s, ids["a"], ids["old"], capsys)
    assert rc == 2 and "ranks.npz" in err and f"eabench eval --run {ids['old']}" in err


@pytest.mark.slow
def test_real_run_ranks_reproduce_logged_metrics(synth, store, one_thread) -> None:  # noqa: F811
    from mlflow.tracking import MlflowClient

    from harness.metrics import metrics_from_ranks
    from harness.train import run_training
    from harness.train.schema import DIRECTIONS, METRICS, best_key
    from reports.ranks import load_ranks

    res = run_training(make_cfg(synth, store, epochs=1, variant="meanP_A4"))
    client = MlflowClient(tracking_uri=f"sqlite:///{store.resolve() / 'mlflow.db'}")
    logged = client.get_run(res.run_id).data.metrics
    rk = load_ranks(client, res.run_id)
    assert rk is not None and len(rk.query_ids) == len(rk.t2v) > 0
    for d in DIRECTIONS:
        got = metrics_from_ranks(rk.ranks(d))
        for m in METRICS:
            assert got[m] == logged[best_key(d, m)], (d, m)  # exactly: the metrics are computed from these ranks


def test_compare_says_when_the_sides_differ_in_numerics(planted, capsys) -> None:
    s, ids = planted
    rc, out, _ = _compare(s, ids["ref"], ids["fast"], capsys, "--json")
    res = json.loads(out)
    assert rc == 0 and res["setup"]["a"]["numerics"] == ["reference"] and res["setup"]["b"]["numerics"] == ["fast"]
    assert len(res["warnings"]) == 1 and "differ in numerics (reference vs fast)" in res["warnings"][0]
    rc, out, _ = _compare(s, ids["ref"], ids["fast"], capsys)
    assert rc == 0 and "warning:" in out and "differ in numerics" in " ".join(out.split())
    # same numerics (here: unrecorded on both sides) -> nothing to warn about
    rc, out, _ = _compare(s, ids["a"], ids["b"], capsys, "--json")
    assert json.loads(out)["warnings"] == []
