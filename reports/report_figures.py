"""The figures of a report: per-video frame weights, weights over the test set, the share of
weight on relevant frames or annotated moments (with its paired test over videos), ratio curves
and training curves, written from MLflow runs into ``<out>/figures``.

:func:`reports.build.build_report` calls these; a notebook can too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from harness.train.schema import ARTIFACT_FRAME_WEIGHTS
from reports.curves import plot_ratio_curve, plot_training_curves, ratio_points
from reports.labels import row_info, temporal_rank
from reports.runs import RunRecord, load_frame_weights, load_history, runs_frame
from reports.sources import find_truth, load_truth, relevant_matrix, thumbnail_source
from reports.weight_figures import (
    NO_WEIGHTS,
    FigureOut,
    VariantWeights,
    plot_entropy,
    plot_heatmap_grid,
    plot_relevant_share,
    plot_video,
    save_figure,
)
from reports.weight_stats import moment_stats

__all__ = ["FIG_FORMATS", "slug", "write_curve_figures", "write_weight_figures"]

FIG_FORMATS: tuple[str, ...] = ("png", "pdf")  # PNG for the page, PDF for papers
TRUTH_NAME = "true relevant frames"
MOMENTS_NAME = "annotated moments"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _figure_out(fig: Any, panels: Any, fig_dir: Path, name: str, formats: tuple[str, ...],
                caption: str) -> FigureOut:
    """Save ``fig`` in every format under ``fig_dir`` and describe it for the page."""
    return FigureOut(name, save_figure(fig, fig_dir, name, formats), panels, caption=caption)


# ------------------------------------------------------------------ weight figures
def _label(r: RunRecord, table: str | None) -> str:
    label = row_info(r.variant, table or r.paper_table or None, r.paper_label, r.temporal).label
    return label if not r.temporal or r.temporal in label else f"{r.temporal}: {label}"


def _one_run_per_variant(runs: list[RunRecord], table: str | None = None) -> list[RunRecord]:
    """The first seed's run of each variant, in the paper's row order."""
    seen: dict[str, RunRecord] = {}
    for r in sorted(runs, key=lambda r: (r.seed, r.run_id)):
        seen.setdefault(r.variant, r)

    def order(r: RunRecord) -> tuple[int, int, str]:
        info = row_info(r.variant, table or r.paper_table or None, r.paper_label, r.temporal)
        return temporal_rank(info.temporal), info.order, r.variant

    return sorted(seen.values(), key=order)


def write_weight_figures(
    client: Any,
    runs: list[RunRecord],
    out: Path,
    *,
    videos: int = 4,
    table: str | None = None,
    max_variants: int = 8,
    prefix: str = "",
    fig_formats: tuple[str, ...] = FIG_FORMATS,
) -> tuple[list[FigureOut], pd.DataFrame, list[str]]:
    """Per-video, heatmap, entropy and relevant-share figures for the runs' logged frame weights.

    Runs without gates or weights (baselines) get the message "no weights to plot" and no
    figure; nothing here raises because one run lacks an artifact.
    """
    figs: list[FigureOut] = []
    msgs: list[str] = []
    loaded: list[tuple[RunRecord, VariantWeights]] = []
    for r in _one_run_per_variant(runs, table):
        fw = load_frame_weights(client, r.run_id)
        label = _label(r, table)
        if fw is None:
            msgs.append(f"{label} [{r.run_id[:8]}]: {NO_WEIGHTS} (the run logged no {ARTIFACT_FRAME_WEIGHTS})")
            continue
        if not fw.has_any:
            msgs.append(
                f"{label} [{r.run_id[:8]}]: {NO_WEIGHTS} (no excitation gates or aggregation "
                f"weights: the video is the masked mean of its frames, uniform 1/T)"
            )
            continue
        # Synthetic: the generator's truth; DiDeMo/ActivityNet: the moments people annotated.
        rel, what = None, TRUTH_NAME
        truth_path = find_truth(r)
        if truth_path is not None:
            rel = relevant_matrix(load_truth(truth_path), fw)
        if rel is None and fw.moments is not None and fw.moments.any():
            rel, what = fw.moments, MOMENTS_NAME
        loaded.append((r, VariantWeights(label=label, run_id=r.run_id, fw=fw, relevant=rel, relevant_name=what)))
    if not loaded:
        return figs, pd.DataFrame(), msgs
    prefix = f"{slug(prefix)}_" if prefix else ""
    fig_dir = out / "figures"

    # Per video, every variant under one thumbnail strip (the first max_variants).
    shown = loaded[:max_variants]
    if len(loaded) > max_variants:
        msgs.append(f"per-video figures show the first {max_variants} of {len(loaded)} variants with weights")
    common = [v for v in shown[0][1].fw.video_ids if all(v in x[1].fw.video_ids for x in shown)]
    first_run = shown[0][0]
    T = shown[0][1].fw.mask.shape[1]
    cache, thumbs_note = thumbnail_source(first_run, T)
    if thumbs_note:
        msgs.append(thumbs_note)
    for vid in common[:videos]:
        index = {x[1].run_id: x[1].fw.video_ids.index(vid) for x in shown}
        thumbs = None
        note = thumbs_note
        if cache is not None:
            try:
                thumbs = cache.get(vid)[0]
            except Exception as exc:  # one missing video must not stop the report
                note = f"thumbnails unavailable for {vid}: {exc}"
        fig, panels = plot_video([x[1] for x in shown], index, vid, thumbs, note)
        name = f"{prefix}video_{slug(vid)}"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats,
                                f"Frame weights for test video {vid}"))

    # Across the test set.
    # One panel per variant: its aggregation weights, or its gates when it only excites.
    items = [(v, "weights" if v.fw.weights is not None else "gates") for _, v in loaded]
    fig, panels = plot_heatmap_grid(items)
    name = f"{prefix}heatmap"
    figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats,
                            "Aggregation weights (excitation gates for excitation-only variants) over the test set"))
    if any(v.fw.weights is not None for _, v in loaded):
        fig, panels = plot_entropy([v for _, v in loaded])
        name = f"{prefix}entropy"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats,
                                "Entropy of the aggregation weights relative to uniform"))

    # Share of weight on the relevant frames / annotated moments, with a paired test over videos.
    rows = []
    for r, v in loaded:
        if v.relevant is None:
            continue
        st = moment_stats(v.relevant, v.fw.mask, weights=v.fw.weights, gates=v.fw.gates)
        rows.append({"variant": r.variant, "label": v.label, "run_id": r.run_id, "frames": v.relevant_name, **st})
    shares = pd.DataFrame(rows)
    if not shares.empty:
        what = rows[0]["frames"] if len({x["frames"] for x in rows}) == 1 else "relevant frames or moments"
        fig, panels = plot_relevant_share(
            [(x["label"], x["share"], x["uniform_share"], x["source"]) for x in rows], what=what
        )
        name = f"{prefix}relevant_share"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats, f"Share of weight on the {what} vs uniform"))
        shares.to_csv(out / f"{prefix}relevant_share.csv", index=False)
    elif any(find_truth(r) is not None for r, _ in loaded):
        msgs.append("synthetic truth found but no logged video matched it: relevant-frame share not computed")
    return figs, shares, msgs


# ------------------------------------------------------------------ curves
def write_curve_figures(
    client: Any,
    runs: list[RunRecord],
    out: Path,
    *,
    prefix: str = "",
    table: str | None = None,
    fig_formats: tuple[str, ...] = FIG_FORMATS,
) -> tuple[list[FigureOut], list[str]]:
    figs: list[FigureOut] = []
    msgs: list[str] = []
    prefix = f"{slug(prefix)}_" if prefix else ""
    fig_dir = out / "figures"
    pts = ratio_points(runs_frame(runs))
    if not pts.empty:
        fig, panels = plot_ratio_curve(pts)
        name = f"{prefix}ratio_curve"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats, "T2V R@1 against the reduction ratio r"))
        pts.to_csv(out / f"{prefix}ratio_curve.csv", index=False)
    hist = {}
    for r in sorted(runs, key=lambda r: (r.variant, r.seed)):
        h = load_history(client, r.run_id)
        if not h.empty:
            hist[f"{_label(r, table)}" + (f" (seed {r.seed})" if r.seed else "")] = h
    if hist:
        fig, panels = plot_training_curves(hist)
        name = f"{prefix}training_curves"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats, "Training loss and test T2V R@1 per epoch"))
    else:
        msgs.append("no per-epoch metrics logged: no training curves")
    return figs, msgs
