"""harness.figures: the per-run figures training logs to MLflow (and reports reuse).

What is drawn is read back from the Figure: one block per video (thumbnails, gates, weights) for the
first ``max_videos``, bar heights equal to the arrays given, the uniform line at 1 / #real frames
(video 1 has 3 real frames -> 1/3), highlighted frames shaded, curves equal to the history rows.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from harness.figures import HIGHLIGHT, frame_weight_figure, training_curves_figure

MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=np.float32)
W = np.array([[0.4, 0.3, 0.2, 0.1], [0.2, 0.5, 0.3, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=np.float32)
G = np.array([[0.9, 0.7, 0.2, 0.2], [0.1, 0.9, 0.1, 0.5], [0.3, 0.1, 0.6, 0.8]], dtype=np.float32)


def _bars(ax) -> list[float]:
    return [p.get_height() for p in ax.patches if abs(p.get_width() - 0.7) < 1e-9]


def test_frame_weight_figure_draws_the_arrays() -> None:
    texts = ["a red circle then a blue square", "a dog", "a cat"]
    hl = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=bool)
    fig = frame_weight_figure({"mask": MASK, "gates": G, "weights": W, "video_ids": np.array(["v0", "v1", "v2"])},
                              texts, highlight=hl, max_videos=2)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert list(axes) == ["thumbnails:0", "gates:0", "weights:0", "thumbnails:1", "gates:1", "weights:1"]
    assert _bars(axes["gates:1"]) == pytest.approx(G[1].tolist())
    assert _bars(axes["weights:0"]) == pytest.approx(W[0].tolist())
    assert axes["weights:1"].lines[0].get_ydata()[0] == pytest.approx(1 / 3)  # uniform over 3 real frames
    assert "a red circle then a blue square" in axes["thumbnails:0"].get_title(loc="left")
    assert "[v1]" in axes["thumbnails:1"].get_title(loc="left")
    green = to_rgba(HIGHLIGHT, 0.15)
    shaded = sorted(round(p.get_x() + 0.5) for p in axes["weights:1"].patches
                    if np.allclose(p.get_facecolor(), green))
    assert shaded == [1]  # frame 3 of video 1 is padding: never highlighted
    fig.savefig(io.BytesIO(), format="png")  # renders without pyplot


def test_mean_pooling_and_thumbnails() -> None:
    thumbs = np.zeros((1, 4, 3, 8, 8), dtype=np.uint8)  # the frame cache's [T, 3, H, W] layout
    thumbs[0, 2, 0] = 200  # frame 2 red
    fig = frame_weight_figure({"mask": MASK[:1], "moments": np.array([[0, 0, 1, 1]], dtype=bool)}, ["q"],
                              frames=thumbs)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert list(axes) == ["thumbnails:0", "uniform:0"]
    assert _bars(axes["uniform:0"]) == pytest.approx([0.25] * 4)
    strip = axes["thumbnails:0"].images[0].get_array()
    cell = 8 + 1  # thumbnail + gap
    assert strip.shape == (8, 4 * cell, 3)
    assert (strip[:, 2 * cell : 2 * cell + 8, 0] == 200).all() and (strip[:, 0:8, 0] == 0).all()
    assert any("annotated moments" in t.get_text() for t in fig.texts)


def test_training_curves_one_run_and_several() -> None:
    hist = [
        {"epoch": 0, "train/loss": 2.0, "t2v/R1": 10.0, "v2t/R1": 12.0, "train/lr": 1e-4, "train/skipped_steps": 0.0},
        {"epoch": 1, "train/loss": 1.5, "t2v/R1": 20.0, "v2t/R1": 18.0, "train/lr": 5e-5, "train/skipped_steps": 2.0},
    ]
    fig = training_curves_figure(hist)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert list(axes) == ["train/loss", "t2v/R1", "train/lr"]
    assert axes["train/loss"].lines[0].get_ydata().tolist() == [2.0, 1.5]
    assert [ln.get_ydata().tolist() for ln in axes["t2v/R1"].lines] == [[10.0, 20.0], [12.0, 18.0]]
    assert axes["train/lr"].get_yscale() == "log"
    assert "2 training step(s) skipped" in fig._suptitle.get_text()
    many = training_curves_figure({"run a": hist, "run b": hist[:1]})
    axes = {ax.get_label(): ax for ax in many.axes}
    assert list(axes) == ["train/loss", "t2v/R1"]
    assert [ln.get_label() for ln in axes["t2v/R1"].lines] == ["run a", "run b"]
    with pytest.raises(ValueError):
        training_curves_figure([])


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, harness.figures; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
