"""Frame-weight figures: what each variant's excitation gates and aggregation weights did.

Per video: the query, the sampled frames as thumbnails in order, and under them one panel per
variant for the excitation gates (0-1) and one for the aggregation weights with the uniform
1/T line that mean pooling uses; padded frames are greyed, true relevant frames (synthetic
benchmark) are outlined in green. Across the test set: a heatmap of aggregation weights
(videos x frame position), the distribution of weight entropy against uniform, and on the
synthetic benchmark the share of weight on relevant frames against the uniform share (the
numbers are :mod:`reports.weight_stats`').

Figures are built with the object API (``matplotlib.figure.Figure`` + Agg canvas), so nothing
here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.figures import GREY, HIGHLIGHT, WEIGHT_COLOR, draw_frame_bars, draw_thumb_strip
from reports.runs import FrameWeights
from reports.weight_stats import normalized_entropy

__all__ = [
    "NO_WEIGHTS",
    "FigureOut",
    "VariantWeights",
    "plot_entropy",
    "plot_heatmap",
    "plot_heatmap_grid",
    "plot_relevant_share",
    "plot_video",
    "save_figure",
]

NO_WEIGHTS = "no weights to plot"
RELEVANT = HIGHLIGHT


@dataclass
class VariantWeights:
    """One run's frame weights, with the label it has in the table."""

    label: str
    run_id: str
    fw: FrameWeights
    relevant: np.ndarray | None = None  # [N, T] bool: synthetic ground truth or annotated moments
    relevant_name: str = "true relevant frames"  # or "annotated moments"


@dataclass
class FigureOut:
    """A written figure: its files and the panels it holds (tests and the page read these)."""

    name: str
    paths: list[Path]
    panels: list[str]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ drawing helpers
def save_figure(
    fig: Figure, out_dir: Path, name: str, formats: tuple[str, ...] = ("png", "pdf")
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        fig.savefig(p, bbox_inches="tight", dpi=120)
        paths.append(p)
    return paths


def plot_video(
    variants: list[VariantWeights],
    index: dict[str, int] | int,
    video_id: str,
    thumbs: np.ndarray | None = None,
    thumbs_note: str = "",
) -> tuple[Figure, list[str]]:
    """One video across variants: thumbnails, then gates and weights panels per variant.

    ``index`` is the video's row in each variant's arrays (a dict by run id, or one int for all).
    Returns the figure and the names of its panels. Variants without gates and weights are
    listed in a note instead of getting empty panels.
    """
    rows: list[tuple[str, VariantWeights, np.ndarray]] = []
    skipped = []
    for v in variants:
        i = index[v.run_id] if isinstance(index, dict) else index
        if v.fw.gates is not None:
            rows.append(("gates", v, v.fw.gates[i]))
        if v.fw.weights is not None:
            rows.append(("weights", v, v.fw.weights[i]))
        if not v.fw.has_any:
            skipped.append(v.label)
    if not rows:
        raise ValueError(NO_WEIGHTS)
    first = variants[0]
    i0 = index[first.run_id] if isinstance(index, dict) else index
    mask_row = first.fw.mask[i0]
    T = len(mask_row)
    rel_row = next(
        (
            v.relevant[index[v.run_id] if isinstance(index, dict) else index]
            for v in variants
            if v.relevant is not None
        ),
        None,
    )
    times_row = first.fw.frame_times[i0] if first.fw.frame_times is not None else None
    text = first.fw.texts[i0] if first.fw.texts else ""

    height = 1.2 + 1.5 * len(rows)
    fig = Figure(figsize=(max(6.0, 0.75 * T), height))
    # fixed margins in inches: the default fractions leave tall figures with wide gaps
    gs = fig.add_gridspec(
        1 + len(rows),
        1,
        height_ratios=[1.0] + [1.3] * len(rows),
        hspace=0.55,
        top=1 - 0.45 / height,
        bottom=0.35 / height,
    )
    draw_thumb_strip(fig.add_subplot(gs[0, 0]), thumbs, mask_row, rel_row, times_row)
    panels = ["thumbnails"]
    title = "\n".join(textwrap.wrap(f"“{text}”", 90)) if text else video_id
    fig.suptitle(f"{title}\n[{video_id}]", fontsize=9, y=1.0)
    for r, (kind, v, vals) in enumerate(rows, start=1):
        ax = fig.add_subplot(gs[r, 0])
        what = "excitation gates" if kind == "gates" else "aggregation weights"
        draw_frame_bars(ax, vals, mask_row, kind, rel_row, f"{v.label} — {what}")
        panels.append(f"{kind}:{v.label}")
    foot = []
    if skipped:
        foot.append(f"{NO_WEIGHTS} for: {', '.join(skipped)} (mean pooling, uniform 1/T)")
    if thumbs_note:
        foot.append(thumbs_note)
    if rel_row is not None:
        name = next((v.relevant_name for v in variants if v.relevant is not None), "true relevant frames")
        foot.append(f"green: {name}; grey: padding")
    else:
        foot.append("grey: padding")
    fig.text(0.01, 0.0, "; ".join(foot), fontsize=7, color="#444444", ha="left", va="top")
    return fig, panels


def plot_heatmap(v: VariantWeights, max_videos: int = 100, kind: str = "weights") -> tuple[Figure, list[str]]:
    """Aggregation weights (or excitation gates, ``kind="gates"``) of the test videos (rows) by
    frame position (columns); padding grey, true relevant frames dotted."""
    return plot_heatmap_grid([(v, kind)], max_videos=max_videos)


def plot_heatmap_grid(
    items: list[tuple[VariantWeights, str]], max_videos: int = 100, ncols: int = 3
) -> tuple[Figure, list[str]]:
    """Several variants' heatmaps in one figure (one panel each, its own colour scale)."""
    if not items:
        raise ValueError(NO_WEIGHTS)
    n = len(items)
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    T = items[0][0].fw.mask.shape[1]
    N = min(max_videos, items[0][0].fw.mask.shape[0])
    fig = Figure(figsize=(cols * max(4.2, 0.38 * T), rows * (1.4 + 0.045 * N)), layout="constrained")
    panels = []
    for k, (v, kind) in enumerate(items):
        ax = fig.add_subplot(rows, cols, k + 1)
        panels.append(_heatmap_ax(ax, v, max_videos, kind))
    return fig, panels


def _heatmap_ax(ax, v: VariantWeights, max_videos: int, kind: str) -> str:
    arr = v.fw.weights if kind == "weights" else v.fw.gates
    if arr is None:
        raise ValueError(NO_WEIGHTS)
    what = "aggregation weight" if kind == "weights" else "excitation gate"
    w = np.asarray(arr[:max_videos], dtype=float)
    m = v.fw.mask[:max_videos] <= 0
    ax.set_facecolor(GREY)
    if kind == "weights":
        # Weights relative to uniform (w x #real frames, 1 = mean pooling) on a diverging scale
        # centred at 1: learned weights often stay close to 1/T, and an absolute 0..max scale
        # would paint every cell the same colour.
        n_real = np.clip((~m).sum(1, keepdims=True), 1, None)
        w = w * n_real
        dev = np.abs(w[~m] - 1.0)
        span = max(float(np.quantile(dev, 0.98)) if dev.size else 0.0, 1e-3)
        sns.heatmap(
            w,
            mask=m,
            ax=ax,
            cmap="RdBu_r",
            vmin=1 - span,
            vmax=1 + span,  # symmetric: white = uniform
            cbar_kws={"label": "weight × T (1 = uniform)"},
            xticklabels=True,
            yticklabels=False,
        )
    else:
        sns.heatmap(
            w,
            mask=m,
            ax=ax,
            cmap="viridis",
            robust=True,
            cbar_kws={"label": "gate"},
            xticklabels=True,
            yticklabels=False,
        )
    ax.figure.axes[-1].tick_params(labelsize=6)
    ax.figure.axes[-1].yaxis.label.set_size(7)
    if v.relevant is not None:
        ys, xs = np.nonzero(v.relevant[:max_videos] & ~m)
        ax.scatter(xs + 0.5, ys + 0.5, s=3, c="black", marker="o", linewidths=0, label="relevant frame")
        ax.legend(fontsize=5, loc="upper right", frameon=True)
    ax.set_xlabel("frame position", fontsize=7)
    ax.set_ylabel(f"test videos (first {w.shape[0]})", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title("\n".join(textwrap.wrap(f"{v.label}: {what}s", 48)), fontsize=7)
    return f"heatmap-{kind}:{v.label}"


def plot_entropy(variants: list[VariantWeights]) -> tuple[Figure, list[str]]:
    """Histogram of normalised weight entropy per variant; 1.0 is uniform (log T)."""
    with_w = [v for v in variants if v.fw.weights is not None]
    if not with_w:
        raise ValueError(NO_WEIGHTS)
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    bins = np.linspace(0, 1.0001, 26)
    for v in with_w:
        h = normalized_entropy(v.fw.weights, v.fw.mask)
        h = h[np.isfinite(h)]
        ax.hist(h, bins=bins, alpha=0.55, label=f"{v.label} (mean {np.mean(h):.3f})" if len(h) else v.label)
    ax.axvline(1.0, color="k", ls="--", lw=1, label="uniform (H = log T)")
    ax.set_xlabel("weight entropy / log(#real frames)")
    ax.set_ylabel("videos")
    ax.set_title("How peaked are the aggregation weights?", fontsize=9)
    ax.legend(fontsize=6, frameon=False)
    return fig, ["entropy"]


def plot_relevant_share(
    rows: list[tuple[str, float, float, str]], what: str = "relevant frames"
) -> tuple[Figure, list[str]]:
    """Bars: share of weight on the true relevant frames (or the annotated moments, ``what``) per
    variant beside the uniform share.

    ``rows``: (label, share, uniform_share, source) with source "weights" or "gates".
    """
    if not rows:
        raise ValueError(NO_WEIGHTS)
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[1] for r in rows], width=0.4, color=WEIGHT_COLOR, label="model")
    ax.bar(x + 0.2, [r[2] for r in rows], width=0.4, color="#999999", label="uniform (mean pooling)")
    for xi, r in zip(x, rows):
        ax.text(xi - 0.2, r[1], f"{r[1]:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(
        ["\n".join(textwrap.wrap(f"{r[0]}{' (gates)' if r[3] == 'gates' else ''}", 18)) for r in rows],
        fontsize=6,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of weight on {what}")
    ax.set_title(f"Do the weights find the {what}?", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig, ["relevant_share"]
