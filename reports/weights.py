"""Frame-weight figures: what each variant's excitation gates and aggregation weights did.

Per video: the query, the sampled frames as thumbnails in order, and under them one panel per
variant for the excitation gates (0-1) and one for the aggregation weights with the uniform
1/T line that mean pooling uses; padded frames are greyed, true relevant frames (synthetic
benchmark) are outlined in green. Across the test set: a heatmap of aggregation weights
(videos x frame position), the distribution of weight entropy against uniform, and on the
synthetic benchmark the share of weight on relevant frames against the uniform share.

Figures are built with the object API (``matplotlib.figure.Figure`` + Agg canvas), so nothing
here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.runs import FrameWeights

__all__ = [
    "NO_WEIGHTS",
    "FigureOut",
    "VariantWeights",
    "gate_share",
    "normalized_entropy",
    "plot_entropy",
    "plot_heatmap",
    "plot_heatmap_grid",
    "plot_relevant_share",
    "plot_video",
    "relevant_weight_share",
    "save_figure",
]

NO_WEIGHTS = "no weights to plot"
GREY = "#d9d9d9"
RELEVANT = "#2ca02c"
GATE_COLOR = "#1f77b4"
WEIGHT_COLOR = "#ff7f0e"


@dataclass
class VariantWeights:
    """One run's frame weights, with the label it has in the table."""

    label: str
    run_id: str
    fw: FrameWeights
    relevant: np.ndarray | None = None  # [N, T] bool: synthetic ground truth per frame position


@dataclass
class FigureOut:
    """A written figure: its files and the panels it holds (tests and the page read these)."""

    name: str
    paths: list[Path]
    panels: list[str]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ numbers
def relevant_weight_share(weights: np.ndarray, relevant: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean share of aggregation weight on relevant real frames, and what uniform weights give.

    Per video: ``share = sum(w[relevant & real]) / sum(w)`` (weight the authors' unmasked softmax
    puts on padded frames counts as missing the relevant ones) and
    ``uniform = #(relevant & real) / #real`` (masked mean pooling). Both are averaged over the
    videos that have at least one real frame.
    """
    w = np.asarray(weights, dtype=float)
    rel = np.asarray(relevant, dtype=bool)
    real = np.asarray(mask, dtype=float) > 0
    if not (w.shape == rel.shape == real.shape):
        raise ValueError(f"shapes differ: weights {w.shape}, relevant {rel.shape}, mask {real.shape}")
    keep = real.sum(1) > 0
    if not keep.any():
        return float("nan"), float("nan")
    w, rel, real = w[keep], rel[keep], real[keep]
    total = w.sum(1)
    total = np.where(total > 0, total, 1.0)
    share = (w * (rel & real)).sum(1) / total
    uniform = (rel & real).sum(1) / real.sum(1)
    return float(share.mean()), float(uniform.mean())


def gate_share(gates: np.ndarray, relevant: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The same share for excitation-only variants: the masked mean of gated frames weights frame
    t by ``g_t / sum(g)`` over real frames (ignoring feature norms), so gates normalised over the
    real frames play the role of aggregation weights."""
    g = np.asarray(gates, dtype=float) * (np.asarray(mask, dtype=float) > 0)
    return relevant_weight_share(g, relevant, mask)


def normalized_entropy(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Entropy of each video's weights over its real frames divided by log(#real): 1 = uniform.

    Videos with fewer than two real frames have no spread to measure and give NaN.
    """
    w = np.asarray(weights, dtype=float) * (np.asarray(mask, dtype=float) > 0)
    n = (np.asarray(mask, dtype=float) > 0).sum(1)
    p = w / np.clip(w.sum(1, keepdims=True), 1e-12, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
        out = h / np.log(n)
    return np.where(n > 1, out, np.nan)


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


def _shade(ax, mask_row: np.ndarray, relevant_row: np.ndarray | None) -> None:
    for t, m in enumerate(mask_row):
        if m <= 0:
            ax.axvspan(t - 0.5, t + 0.5, color=GREY, zorder=0)
        elif relevant_row is not None and relevant_row[t]:
            ax.axvspan(t - 0.5, t + 0.5, color=RELEVANT, alpha=0.12, zorder=0)


def _thumb_strip(
    ax,
    thumbs: np.ndarray | None,
    mask_row: np.ndarray,
    relevant_row: np.ndarray | None,
    times_row: np.ndarray | None,
) -> None:
    """The sampled frames side by side in one axis (frame t centred at x = t, like the panels
    below): thumbnails, or light placeholders when none are available; padding grey."""
    from matplotlib.patches import Rectangle

    T = len(mask_row)
    size = 32
    if thumbs is not None:
        size = int(np.asarray(thumbs).shape[-1])
    gap = max(1, size // 16)
    cell = size + gap
    strip = np.full((size, T * cell, 3), 255, dtype=np.uint8)
    for t in range(T):
        x0 = t * cell + gap // 2
        if mask_row[t] <= 0:
            strip[:, x0 : x0 + size] = 217
        elif thumbs is not None:
            img = np.asarray(thumbs[t])
            if img.ndim == 3 and img.shape[0] in (1, 3):
                img = np.transpose(img, (1, 2, 0))
            if img.shape[-1] == 1:
                img = np.repeat(img, 3, axis=-1)
            strip[:, x0 : x0 + size] = img[:size, :size]
        else:
            strip[:, x0 : x0 + size] = 244
    ax.imshow(strip, extent=(-0.5, T - 0.5, 0, 1), aspect="auto", interpolation="nearest")
    for t in range(T):
        if mask_row[t] <= 0:
            ax.text(t, 0.5, "pad", ha="center", va="center", fontsize=7, color="#666666")
        elif thumbs is None:
            ax.text(t, 0.5, f"{t}", ha="center", va="center", fontsize=7, color="#888888")
        if relevant_row is not None and relevant_row[t] and mask_row[t] > 0:
            ax.add_patch(
                Rectangle((t - 0.47, 0.02), 0.94, 0.96, fill=False, edgecolor=RELEVANT, linewidth=2.5)
            )
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(np.arange(T))
    ax.set_xticklabels(
        [
            f"{times_row[t]:.0f}s" if times_row is not None and np.isfinite(times_row[t]) else f"t{t}"
            for t in range(T)
        ],
        fontsize=6,
    )
    ax.tick_params(length=0, pad=1)
    for sp in ax.spines.values():
        sp.set_visible(False)


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
    _thumb_strip(fig.add_subplot(gs[0, 0]), thumbs, mask_row, rel_row, times_row)
    panels = ["thumbnails"]
    title = "\n".join(textwrap.wrap(f"“{text}”", 90)) if text else video_id
    fig.suptitle(f"{title}\n[{video_id}]", fontsize=9, y=1.0)
    n_real = max(int((mask_row > 0).sum()), 1)
    for r, (kind, v, vals) in enumerate(rows, start=1):
        ax = fig.add_subplot(gs[r, 0])
        _shade(ax, mask_row, rel_row)
        x = np.arange(T)
        if kind == "gates":
            ax.bar(x, vals, color=GATE_COLOR, width=0.7)
            ax.set_ylim(0, 1)
            ax.set_ylabel("gate", fontsize=7)
        else:
            ax.bar(x, vals, color=WEIGHT_COLOR, width=0.7)
            ax.axhline(1.0 / n_real, color="k", ls="--", lw=1, label=f"uniform 1/T = 1/{n_real}")
            ax.set_ylim(0, max(float(np.nanmax(vals)) * 1.15, 1.5 / n_real))
            ax.set_ylabel("weight", fontsize=7)
            ax.legend(fontsize=6, loc="upper right", frameon=False)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_xticks(x)
        ax.tick_params(labelsize=6)
        ax.set_title(
            f"{v.label} — {'excitation gates' if kind == 'gates' else 'aggregation weights'}",
            fontsize=8,
            loc="left",
        )
        panels.append(f"{kind}:{v.label}")
    foot = []
    if skipped:
        foot.append(f"{NO_WEIGHTS} for: {', '.join(skipped)} (mean pooling, uniform 1/T)")
    if thumbs_note:
        foot.append(thumbs_note)
    if rel_row is not None:
        foot.append("green: true relevant frames; grey: padding")
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
    import seaborn as sns

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


def plot_relevant_share(rows: list[tuple[str, float, float, str]]) -> tuple[Figure, list[str]]:
    """Bars: share of weight on the true relevant frames per variant beside the uniform share.

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
    ax.set_ylabel("share of weight on relevant frames")
    ax.set_title("Synthetic benchmark: do the weights find the relevant frames?", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return fig, ["relevant_share"]
