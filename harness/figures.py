"""Figures of one training run as pure functions: arrays and dicts in, a matplotlib ``Figure`` out.

- :func:`frame_weight_figure`: the first few test videos of a run, each with its query above, the
  sampled frames (thumbnails, or numbered placeholders), the excitation gates (0-1) and the
  aggregation weights per frame with the uniform 1/T line of mean pooling; padding grey, relevant
  frames (synthetic truth) or annotated moments (DiDeMo, ActivityNet) shaded;
- :func:`training_curves_figure`: loss, R@1 and learning rate per epoch, of one run or of several.

The training loop logs both with ``mlflow.log_figure`` at the end of every run, and ``reports`` draws
its per-video panels and curves with the same helpers (:func:`draw_thumb_strip`,
:func:`draw_frame_bars`), so there is one implementation. Figures use the object API
(``matplotlib.figure.Figure``): no pyplot state, no display. matplotlib is imported inside the
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.train.schema import METRIC_LOSS, METRIC_LR, METRIC_LR_CLIP, METRIC_SKIPPED, metric_key

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "GATE_COLOR",
    "GREY",
    "HIGHLIGHT",
    "WEIGHT_COLOR",
    "draw_frame_bars",
    "draw_thumb_strip",
    "frame_weight_figure",
    "training_curves_figure",
]

GREY = "#d9d9d9"
HIGHLIGHT = "#2ca02c"
GATE_COLOR = "#1f77b4"
WEIGHT_COLOR = "#ff7f0e"
T2V_R1, V2T_R1 = metric_key("t2v", "R1"), metric_key("v2t", "R1")


# ------------------------------------------------------------------ drawing helpers
def _shade(ax: Any, mask_row: np.ndarray, highlight_row: np.ndarray | None) -> None:
    for t, m in enumerate(mask_row):
        if m <= 0:
            ax.axvspan(t - 0.5, t + 0.5, color=GREY, zorder=0)
        elif highlight_row is not None and highlight_row[t]:
            ax.axvspan(t - 0.5, t + 0.5, color=HIGHLIGHT, alpha=0.15, zorder=0)


def draw_thumb_strip(
    ax: Any,
    thumbs: np.ndarray | None,
    mask_row: np.ndarray,
    highlight_row: np.ndarray | None = None,
    times_row: np.ndarray | None = None,
) -> None:
    """The sampled frames side by side in one axis (frame t centred at x = t, like the bar panels):
    thumbnails ([T, H, W, 3] or [T, 3, H, W] uint8), or numbered placeholders; padding grey;
    highlighted frames outlined; tick labels give each frame's time when known."""
    from matplotlib.patches import Rectangle

    T = len(mask_row)
    imgs = None
    size = 32
    if thumbs is not None:
        imgs = np.asarray(thumbs)
        if imgs.ndim == 4 and imgs.shape[1] in (1, 3) and imgs.shape[-1] not in (1, 3):
            imgs = imgs.transpose(0, 2, 3, 1)  # [T, C, H, W] (the frame cache's layout) -> [T, H, W, C]
        if imgs.shape[-1] == 1:
            imgs = np.repeat(imgs, 3, axis=-1)
        size = int(min(imgs.shape[1], imgs.shape[2]))
    gap = max(1, size // 16)
    cell = size + gap
    strip = np.full((size, T * cell, 3), 255, dtype=np.uint8)
    for t in range(T):
        x0 = t * cell + gap // 2
        if mask_row[t] <= 0:
            strip[:, x0 : x0 + size] = 217
        elif imgs is not None:
            strip[:, x0 : x0 + size] = imgs[t, :size, :size]
        else:
            strip[:, x0 : x0 + size] = 244
    ax.imshow(strip, extent=(-0.5, T - 0.5, 0, 1), aspect="auto", interpolation="nearest")
    for t in range(T):
        if mask_row[t] <= 0:
            ax.text(t, 0.5, "pad", ha="center", va="center", fontsize=7, color="#666666")
        elif thumbs is None:
            ax.text(t, 0.5, f"{t}", ha="center", va="center", fontsize=7, color="#888888")
        if highlight_row is not None and highlight_row[t] and mask_row[t] > 0:
            ax.add_patch(Rectangle((t - 0.47, 0.02), 0.94, 0.96, fill=False, edgecolor=HIGHLIGHT, linewidth=2.5))
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(np.arange(T))
    ax.set_xticklabels(
        [f"{times_row[t]:.0f}s" if times_row is not None and np.isfinite(times_row[t]) else f"t{t}" for t in range(T)],
        fontsize=6,
    )
    ax.tick_params(length=0, pad=1)
    for sp in ax.spines.values():
        sp.set_visible(False)


def draw_frame_bars(
    ax: Any,
    values: np.ndarray | None,
    mask_row: np.ndarray,
    kind: str,
    highlight_row: np.ndarray | None = None,
    title: str = "",
) -> None:
    """One bar per frame: ``kind`` "gates" (0-1), "weights" (with the uniform 1/T line over the real
    frames) or "uniform" (no learned weights: mean pooling's 1/T itself)."""
    T = len(mask_row)
    n_real = max(int((np.asarray(mask_row) > 0).sum()), 1)
    _shade(ax, mask_row, highlight_row)
    x = np.arange(T)
    if kind == "gates":
        ax.bar(x, values, color=GATE_COLOR, width=0.7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("gate", fontsize=7)
    else:
        vals = values if kind == "weights" else (np.asarray(mask_row) > 0) / n_real
        ax.bar(x, vals, color=WEIGHT_COLOR if kind == "weights" else "#bbbbbb", width=0.7)
        ax.axhline(1.0 / n_real, color="k", ls="--", lw=1, label=f"uniform 1/T = 1/{n_real}")
        top = float(np.nanmax(vals)) if np.size(vals) and np.isfinite(np.nanmax(vals)) else 0.0
        ax.set_ylim(0, max(top * 1.15, 1.5 / n_real))
        ax.set_ylabel("weight", fontsize=7)
        ax.legend(fontsize=6, loc="upper right", frameon=False)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_xticks(x)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=8, loc="left")


def _query_title(text: str, video_id: str) -> str:
    head = "\n".join(textwrap.wrap(f"“{text}”", 90)) if text else ""
    return f"{head}\n[{video_id}]" if head and video_id else head or f"[{video_id}]"


# ------------------------------------------------------------------ frame weights of one run
def frame_weight_figure(
    weights: Mapping[str, np.ndarray],
    texts: Sequence[str],
    *,
    frames: np.ndarray | None = None,
    highlight: np.ndarray | None = None,
    max_videos: int = 4,
    video_ids: Sequence[str] | None = None,
    highlight_label: str = "relevant frames",
) -> Figure:
    """The first ``max_videos`` test videos of one run, one block each: query text, thumbnails,
    gate bars and weight bars.

    ``weights``: the frame-weight arrays of ``harness.train.evaluation.Scores.weights`` (or a loaded
    ``frame_weights.npz``): ``mask`` [N, T] (required), and where present ``gates`` [N, T],
    ``weights`` [N, T], ``frame_times`` [N, T] seconds, ``video_ids`` [N], ``moments`` [N, T] bool.
    ``texts``: one query per video. ``frames``: thumbnails [N, T, H, W, 3] (or [N, T, 3, H, W])
    uint8. ``highlight``: [N, T] bool frames to shade and outline (synthetic relevant frames; by
    default the ``moments`` array when there is one). A variant with neither gates nor weights
    (mean pooling) gets one panel of its uniform 1/T weights.
    """
    from matplotlib.figure import Figure

    mask = np.asarray(weights["mask"], dtype=float)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [videos, frames], got shape {mask.shape}")
    n = min(int(max_videos), mask.shape[0])
    if n < 1:
        raise ValueError("no videos to draw")
    T = mask.shape[1]
    gates = weights.get("gates")
    wts = weights.get("weights")
    times = weights.get("frame_times")
    ids = list(video_ids) if video_ids is not None else [str(v) for v in weights.get("video_ids", [])]
    if highlight is None and weights.get("moments") is not None:
        highlight, highlight_label = np.asarray(weights["moments"], dtype=bool), "annotated moments"
    kinds = [k for k, a in (("gates", gates), ("weights", wts)) if a is not None] or ["uniform"]
    rows_per = 1 + len(kinds)
    height = n * (0.9 + 1.2 * len(kinds)) + 0.6
    fig = Figure(figsize=(max(6.0, 0.75 * T), height))
    gs = fig.add_gridspec(n * rows_per, 1, height_ratios=([0.8] + [1.0] * len(kinds)) * n, hspace=0.9,
                          top=1 - 0.25 / height, bottom=0.45 / height)
    for v in range(n):
        hl = None if highlight is None else np.asarray(highlight[v], dtype=bool) & (mask[v] > 0)
        strip = fig.add_subplot(gs[v * rows_per, 0])
        draw_thumb_strip(strip, None if frames is None else np.asarray(frames[v]), mask[v], hl,
                         None if times is None else np.asarray(times[v], dtype=float))
        strip.set_title(_query_title(texts[v] if v < len(texts) else "", ids[v] if v < len(ids) else ""),
                        fontsize=8, loc="left")
        strip.set_label(f"thumbnails:{v}")
        for r, kind in enumerate(kinds, start=1):
            ax = fig.add_subplot(gs[v * rows_per + r, 0])
            vals = None if kind == "uniform" else np.asarray(gates if kind == "gates" else wts, dtype=float)[v]
            label = {"gates": "excitation gates", "weights": "aggregation weights",
                     "uniform": "no learned weights: mean pooling, uniform 1/T"}[kind]
            draw_frame_bars(ax, vals, mask[v], kind, hl, label)
            ax.set_label(f"{kind}:{v}")
    foot = "grey: padding" + (f"; green: {highlight_label}" if highlight is not None else "")
    fig.text(0.01, 0.0, foot, fontsize=7, color="#444444", ha="left", va="bottom")
    return fig


# ------------------------------------------------------------------ training curves
def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is not None and np.isfinite(v):
            xs.append(float(row.get("epoch", i)))
            ys.append(float(v))
    return xs, ys


def training_curves_figure(
    history: Sequence[Mapping[str, float]] | Mapping[str, Sequence[Mapping[str, float]]],
) -> Figure:
    """Per-epoch curves: training loss, test R@1 and (one run) the learning rate.

    ``history``: one run's per-epoch rows (``TrainResult.history`` / ``history.json``: dicts with
    ``epoch``, ``train/loss``, ``t2v/R1``, ``v2t/R1``, ``train/lr``, ...), or several runs as
    ``{label: rows}``. One run draws T2V and V2T R@1 and the learning rates, and notes skipped
    steps; several runs draw loss and T2V R@1, one line per run. Each axis is labelled with its
    metric key (``ax.get_label()``).
    """
    from matplotlib.figure import Figure

    single = not isinstance(history, Mapping)
    runs: dict[str, Sequence[Mapping[str, float]]] = {"": history} if single else dict(history)  # type: ignore[dict-item]
    if not runs or all(len(h) == 0 for h in runs.values()):
        raise ValueError("no per-epoch metrics to draw")
    panels: list[tuple[str, str, list[tuple[str, str]]]] = [
        (METRIC_LOSS, "training loss", [(METRIC_LOSS, "-")]),
        (T2V_R1, "test R@1" if single else "T2V R@1 (test)", [(T2V_R1, "-")] + ([(V2T_R1, "--")] if single else [])),
    ]
    if single and any(METRIC_LR in row for row in history):  # type: ignore[union-attr]
        panels.append((METRIC_LR, "learning rate", [(METRIC_LR, "-"), (METRIC_LR_CLIP, ":")]))
    fig = Figure(figsize=(3.6 * len(panels) + 1, 3.4), layout="constrained")
    for k, (key, title, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.set_label(key)
        for label, rows in runs.items():
            for line_key, style in lines:
                xs, ys = _series(rows, line_key)
                if xs:
                    name = (line_key if single else label) or line_key
                    ax.plot(xs, ys, style, marker="o", ms=3, label=name)
        # log scale only with something positive to show (the lr is 0 at the very first step)
        if key == METRIC_LR and any(np.any(np.asarray(ln.get_ydata(), float) > 0) for ln in ax.lines):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if single and ax.lines:
            ax.legend(fontsize=6, frameon=False)
    if single:
        skipped = max((row.get(METRIC_SKIPPED) or 0.0 for row in history), default=0.0)  # type: ignore[union-attr]
        if skipped:
            fig.suptitle(f"{int(skipped)} training step(s) skipped (non-finite loss or gradient)", fontsize=8,
                         color="#a94442")
    else:
        handles, labels = fig.axes[1].get_legend_handles_labels()
        if not handles:
            handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(3, max(1, len(labels))), frameon=False)
    return fig
