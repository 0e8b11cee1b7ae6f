"""Weight inside annotated moments (DiDeMo/ActivityNet ``moments`` in frame_weights.npz).

Planted (T = 4; video1's last frame is padding):

  video  mask     moments  weights            gates
  0      1 1 1 1  1 1 0 0  .4 .3 .2 .1        .9 .7 .2 .2
  1      1 1 1 0  0 1 0 0  .2 .5 .3 0         .1 .9 .1 .5
  2      1 1 1 1  0 0 1 1  .1 .1 .1 .7        .3 .1 .6 .8

Shares inside: .7, .5, .8 -> mean 2/3; uniform over real frames: 2/4, 1/3, 2/4 -> mean 4/9. Per-video
differences .2, 1/6, .3 are all positive and distinct: exact Wilcoxon p = 2 * (1/2)^3 = 0.25.
Mean gate inside: (.9+.7)/2 = .8, .9, (.6+.8)/2 = .7 -> .8; outside (real frames only): (.2+.2)/2 = .2,
(.1+.1)/2 = .1, (.3+.1)/2 = .2 -> 0.5/3.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_reports import Store, metrics
from matplotlib.colors import to_rgba

from harness.figures import HIGHLIGHT
from reports.build import write_weight_figures
from reports.runs import FrameWeights, load_runs
from reports.weight_figures import VariantWeights, plot_video
from reports.weight_stats import moment_stats

MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=np.float32)
MOMENTS = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)
WEIGHTS = np.array([[0.4, 0.3, 0.2, 0.1], [0.2, 0.5, 0.3, 0.0], [0.1, 0.1, 0.1, 0.7]], dtype=np.float32)
GATES = np.array([[0.9, 0.7, 0.2, 0.2], [0.1, 0.9, 0.1, 0.5], [0.3, 0.1, 0.6, 0.8]], dtype=np.float32)


def _npz(**extra: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "video_ids": np.array(["v0", "v1", "v2"]),
        "texts": np.array(["a man opens a door", "the dog jumps", "a car turns left"]),
        "mask": MASK,
        "frame_times": np.array([[0, 5, 10, 15], [0, 5, 10, np.nan], [0, 5, 10, 15]], dtype=np.float32),
        "moments": MOMENTS,
        **extra,
    }


def test_moment_stats_by_hand() -> None:
    st = moment_stats(MOMENTS, MASK, weights=WEIGHTS, gates=GATES)
    assert st["source"] == "weights" and st["videos"] == 3
    assert st["share"] == pytest.approx(2 / 3, abs=1e-6)
    assert st["uniform_share"] == pytest.approx(4 / 9, abs=1e-6)
    assert st["gain"] == pytest.approx(2 / 3 - 4 / 9, abs=1e-6)
    assert st["p_value"] == pytest.approx(0.25)
    assert st["gate_in"] == pytest.approx(0.8, abs=1e-6)
    assert st["gate_out"] == pytest.approx(0.5 / 3, abs=1e-6)
    # excitation only: gates normalised over the real frames; video 0: (.9+.7)/2.0 = .8
    g = moment_stats(MOMENTS[:1], MASK[:1], gates=GATES[:1])
    assert g["source"] == "gates" and g["share"] == pytest.approx(0.8, abs=1e-6)
    # no difference at all: p = 1, not an error
    flat = moment_stats(MOMENTS, MASK, weights=MASK / MASK.sum(1, keepdims=True))
    assert flat["p_value"] == 1.0 and flat["gain"] == pytest.approx(0.0, abs=1e-7)


def test_moments_read_from_npz_and_padding_never_inside(tmp_path) -> None:
    moments = MOMENTS.copy()
    moments[1, 3] = True  # marked inside, but the frame is padding
    np.savez(tmp_path / "fw.npz", **_npz(weights=WEIGHTS) | {"moments": moments})
    fw = FrameWeights.from_npz(tmp_path / "fw.npz")
    assert fw.moments is not None and fw.moments.dtype == bool
    assert fw.moments.tolist() == MOMENTS.tolist()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    s = Store(tmp_path_factory.mktemp("mom"))
    rid = s.run("meanP_E4_A4", t2v=metrics(30.0), dataset="didemo", npz=_npz(weights=WEIGHTS, gates=GATES))
    return s, rid


def test_report_moment_share_table(store, tmp_path) -> None:
    s, rid = store
    runs = load_runs(s.client, run_ids=[rid], finished_only=False)
    figs, shares, _ = write_weight_figures(s.client, runs, tmp_path, videos=1, fig_formats=("png",))
    row = shares.iloc[0]
    assert row["frames"] == "annotated moments" and row["source"] == "weights"
    assert row["share"] == pytest.approx(2 / 3, abs=1e-6) and row["uniform_share"] == pytest.approx(4 / 9, abs=1e-6)
    assert row["p_value"] == pytest.approx(0.25) and row["gate_in"] == pytest.approx(0.8, abs=1e-6)
    share_fig = next(f for f in figs if f.name.endswith("relevant_share"))
    assert "annotated moments" in share_fig.caption
    assert (tmp_path / "relevant_share.csv").is_file()


def _spans(ax) -> list[int]:
    """Frame positions shaded as highlighted (green, translucent) in a bar panel."""
    green = to_rgba(HIGHLIGHT, 0.15)
    return sorted(round(p.get_x() + 0.5) for p in ax.patches
                  if np.allclose(p.get_facecolor(), green) and abs(p.get_width() - 1.0) < 1e-9)


def test_per_video_plot_shades_moments() -> None:
    fw = FrameWeights(video_ids=["v0", "v1", "v2"], texts=["a", "b", "c"], mask=MASK, gates=GATES,
                      weights=WEIGHTS, moments=MOMENTS)
    v = VariantWeights("row", "r1", fw, relevant=fw.moments, relevant_name="annotated moments")
    fig, panels = plot_video([v], 2, "v2")
    assert panels == ["thumbnails", "gates:row", "weights:row"]
    bar_axes = fig.axes[1:3]
    assert [_spans(ax) for ax in bar_axes] == [[2, 3], [2, 3]]
    assert any("annotated moments" in t.get_text() for t in fig.texts)
