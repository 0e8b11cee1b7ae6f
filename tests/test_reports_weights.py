"""Frame-weight figures for runs with excitation only, aggregation only, both and neither.

Hand numbers (conftest_reports.weights_npz + write_truth): video1 weights .4 .4 .1 .1 on frames
at 0-3 s, relevant seconds {0, 1} -> share .8, uniform 2/4; video2 weights .2 .6 .2 (0 on the
padded frame), relevant second {1} -> share .6, uniform 1/3. Mean share .7, uniform 5/12.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_reports import Store, metrics, weights_npz, write_truth

from reports.build import build_report, write_curve_figures, write_weight_figures
from reports.curves import ratio_points
from reports.runs import load_runs, runs_frame
from reports.weight_figures import NO_WEIGHTS
from reports.weight_stats import gate_share, normalized_entropy, relevant_weight_share

STUDY = "weights-study"


def test_relevant_weight_share_by_hand() -> None:
    w = np.array([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]])
    rel = np.array([[True, False, False, False], [False, True, True, False], [True, True, True, True]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    share, uniform = relevant_weight_share(w, rel, mask)
    # third video has no real frame and is left out
    assert share == pytest.approx((0.5 + 0.5) / 2)
    assert uniform == pytest.approx((1 / 3 + 2 / 4) / 2)
    # weight on a padded frame counts as missing the relevant frames
    s2, u2 = relevant_weight_share(
        np.array([[0.2, 0.2, 0.6]]), np.array([[True, False, False]]), np.array([[1, 1, 0]])
    )
    assert s2 == pytest.approx(0.2) and u2 == pytest.approx(0.5)
    # gates: normalised over the real frames; .9/(.9+.1) = .9
    gs, gu = gate_share(np.array([[0.9, 0.1, 0.7]]), np.array([[True, False, False]]), np.array([[1, 1, 0]]))
    assert gs == pytest.approx(0.9) and gu == pytest.approx(0.5)


def test_normalized_entropy() -> None:
    h = normalized_entropy(
        np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]),
        np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]),
    )
    assert h[0] == pytest.approx(1.0) and h[1] == pytest.approx(0.0)
    assert h[2] == pytest.approx(np.log(2) / np.log(3))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("w")
    s = Store(root / "runs")
    data_root = root / "data"
    write_truth(data_root)
    parent = s.study(STUDY, table="meanP")
    params = {"data_root": str(data_root), "frame_cache": str(root / "no-such-cache")}
    hist = [{"train/loss": 2.0, "t2v/R1": 10.0}, {"train/loss": 1.5, "t2v/R1": 20.0}]
    ids = {}
    for variant, g, w in (
        ("meanP_E4", True, False),
        ("meanP_A4", False, True),
        ("meanP_E4_A4", True, True),
        ("meanP", False, False),
    ):
        ids[variant] = s.run(
            variant,
            t2v=metrics(40.0),
            study=STUDY,
            parent=parent,
            table="meanP",
            dataset="synthetic",
            npz=weights_npz(gates=g, weights=w),
            params=params,
            history=hist,
        )
    return s, ids, parent


def _one(s: Store, rid: str):
    return load_runs(s.client, run_ids=[rid], finished_only=False)


def test_excitation_only(store, tmp_path) -> None:
    s, ids, _ = store
    figs, shares, msgs = write_weight_figures(s.client, _one(s, ids["meanP_E4"]), tmp_path, videos=2)
    video = [f for f in figs if "video_" in f.name]
    assert len(video) == 2  # PNG and PDF by default
    assert video[0].panels == ["thumbnails", "gates:meanP: (1) squeeze excitation (4)"]
    assert all(p.is_file() and p.stat().st_size > 1000 for f in figs for p in f.paths)
    assert {p.suffix for p in video[0].paths} == {".png", ".pdf"}
    kinds = {f.panels[0].split(":")[0] for f in figs}
    assert "heatmap-gates" in kinds and "entropy" not in kinds  # no weights -> no entropy
    assert shares.iloc[0]["source"] == "gates"
    # gates normalised over real frames: video1 (.9+.8)/2.0, video2 .9/1.6; uniform 1/2, 1/3
    assert shares.iloc[0]["share"] == pytest.approx(((0.9 + 0.8) / 2.0 + 0.9 / 1.6) / 2, abs=1e-6)
    assert any("thumbnails unavailable" in m for m in msgs)


def test_aggregation_only(store, tmp_path) -> None:
    s, ids, _ = store
    figs, shares, _ = write_weight_figures(
        s.client, _one(s, ids["meanP_A4"]), tmp_path, videos=1, fig_formats=("png",)
    )
    video = [f for f in figs if "video_" in f.name]
    assert video[0].panels == ["thumbnails", "weights:meanP: (3) squeeze aggregation (4)"]
    names = {f.panels[0].split(":")[0] for f in figs}
    assert {"heatmap-weights", "entropy", "relevant_share"} <= names
    row = shares.iloc[0]
    assert row["source"] == "weights"
    assert row["share"] == pytest.approx(0.7, abs=1e-6)
    assert row["uniform_share"] == pytest.approx(5 / 12, abs=1e-6)
    assert (tmp_path / "relevant_share.csv").is_file()


def test_both(store, tmp_path) -> None:
    s, ids, _ = store
    figs, shares, _ = write_weight_figures(
        s.client, _one(s, ids["meanP_E4_A4"]), tmp_path, videos=1, fig_formats=("png",)
    )
    video = [f for f in figs if "video_" in f.name][0]
    assert [p.split(":")[0] for p in video.panels] == ["thumbnails", "gates", "weights"]
    assert shares.iloc[0]["source"] == "weights"  # the final pooling decides the share


def test_neither_says_no_weights(store, tmp_path) -> None:
    s, ids, _ = store
    figs, shares, msgs = write_weight_figures(s.client, _one(s, ids["meanP"]), tmp_path)
    assert figs == [] and shares.empty
    assert len(msgs) == 1 and NO_WEIGHTS in msgs[0] and "meanP" in msgs[0]
    assert not (tmp_path / "figures").exists()


def test_study_side_by_side_curves_and_page(store, tmp_path) -> None:
    s, ids, parent = store
    res = build_report(
        s.client,
        studies=[STUDY],
        out=tmp_path / "rep",
        videos=1,
        tracking_uri=s.uri,
        fig_formats=("png", "pdf"),
    )
    video = [f for f in res.figures if "video_" in f.name]
    assert len(video) == 1
    # three variants with weights under one thumbnail strip: 1 + (1 + 1 + 2) panels
    assert len(video[0].panels) == 5
    assert any(NO_WEIGHTS in m for m in res.messages)
    assert any("training_curves" in f.name for f in res.figures)
    heat = [f for f in res.figures if f.name.endswith("_heatmap")]
    assert len(heat) == 1 and [p.split(":")[0] for p in heat[0].panels] == [
        "heatmap-gates",
        "heatmap-weights",
        "heatmap-weights",
    ]
    assert len(res.shares) == 3
    html = res.index.read_text()
    assert "What the synthetic benchmark measures" in html
    for f in res.figures:
        png = [p for p in f.paths if p.suffix == ".png"][0]
        rel = png.relative_to(res.out_dir).as_posix()
        assert f'src="{rel}"' in html
    assert "mlflow ui --backend-store-uri" in html
    assert "<table" in html and "**" not in html
    logged = {a.path for a in s.client.list_artifacts(parent, "report/figures")}
    assert any(p.endswith(".png") for p in logged) and any(p.endswith(".pdf") for p in logged)


def test_ratio_curve(store, tmp_path) -> None:
    s = store[0]
    for v, r1 in (("meanP_E2_A2", 30.0), ("meanP_E4_A4", 34.0), ("meanP_E6_A6", 32.0), ("meanP_E4", 50.0)):
        s.run(v, t2v=metrics(r1), study="ratio", table="ratio-meanP-EA")
    s.run("meanP_E4_A4", t2v=metrics(36.0), study="ratio", table="ratio-meanP-EA", seed=1)
    runs = load_runs(s.client, study="ratio")
    pts = ratio_points(runs_frame(runs))
    assert list(pts["r"]) == [2.0, 4.0, 6.0]  # meanP_E4 alone is not a curve
    assert list(pts["mean"]) == [30.0, 35.0, 32.0]
    assert pts["std"].iloc[1] == pytest.approx(np.std([34.0, 36.0], ddof=1))
    figs, _ = write_curve_figures(s.client, runs, tmp_path, fig_formats=("png",))
    assert any(f.panels == ["ratio_curve"] for f in figs)
