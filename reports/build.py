"""Assembling a report: tables, frame-weight figures, curves and the page, from MLflow runs.

These are the functions the CLI (``eabench report ...``) and ``eabench reproduce`` call; a notebook
can call them too::

    client = open_client(root="runs")
    out = build_report(client, studies=["meanP-synthetic-frozen"], out=Path("reports_out"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from reports.curves import plot_ratio_curve, plot_training_curves, ratio_points
from reports.labels import row_info, temporal_rank
from reports.runs import (
    DEFAULT_EXPERIMENT,
    RunRecord,
    find_study_parent,
    load_frame_weights,
    load_history,
    load_runs,
    runs_frame,
)
from reports.sources import find_truth, load_truth, relevant_matrix, thumbnail_source
from reports.tables import ResultTable, build_tables, write_table
from reports.weights import (
    NO_WEIGHTS,
    FigureOut,
    VariantWeights,
    gate_share,
    plot_entropy,
    plot_heatmap_grid,
    plot_relevant_share,
    plot_video,
    relevant_weight_share,
    save_figure,
)

__all__ = [
    "ReportOutput",
    "build_report",
    "log_report_artifacts",
    "slug",
    "write_curve_figures",
    "write_tables",
    "write_weight_figures",
]


FIG_FORMATS: tuple[str, ...] = ("png", "pdf")  # PNG for the page, PDF for papers


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


@dataclass
class ReportOutput:
    out_dir: Path
    tables: list[tuple[ResultTable, dict[str, Path]]] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)
    shares: pd.DataFrame | None = None
    messages: list[str] = field(default_factory=list)
    index: Path | None = None
    studies: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (``--json``)."""
        return {
            "out_dir": str(self.out_dir),
            "index": str(self.index) if self.index else None,
            "studies": self.studies,
            "runs": [r.run_id for r in self.runs],
            "tables": [
                {"dataset": t.dataset, "protocol": t.protocol, "files": {k: str(v) for k, v in p.items()}}
                for t, p in self.tables
            ],
            "figures": [
                {"name": f.name, "files": [str(x) for x in f.paths], "panels": f.panels} for f in self.figures
            ],
            "relevant_share": ([] if self.shares is None else self.shares.to_dict(orient="records")),
            "messages": self.messages,
        }


# ------------------------------------------------------------------ tables

def _figure_out(fig: Any, panels: Any, fig_dir: Path, name: str, formats: tuple[str, ...],
                caption: str) -> FigureOut:
    """Save ``fig`` in every format under ``fig_dir`` and describe it for the page."""
    return FigureOut(name, save_figure(fig, fig_dir, name, formats), panels, caption=caption)


def write_tables(
    runs: list[RunRecord],
    out: Path,
    *,
    formats: tuple[str, ...] = ("md", "tex", "html", "csv"),
    study: str = "",
    table: str | None = None,
) -> list[tuple[ResultTable, dict[str, Path]]]:
    """One table per (dataset, protocol) in ``runs``, each in every format."""
    df = runs_frame(runs)
    written = []
    for t in build_tables(df, study=study, table=table):
        stem = f"table_{slug(study) + '_' if study else ''}{t.name}"
        written.append((t, write_table(t, out, formats, stem=stem)))
    return written


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
            msgs.append(f"{label} [{r.run_id[:8]}]: {NO_WEIGHTS} (the run logged no frame_weights.npz)")
            continue
        if not fw.has_any:
            msgs.append(
                f"{label} [{r.run_id[:8]}]: {NO_WEIGHTS} (no excitation gates or aggregation "
                f"weights: the video is the masked mean of its frames, uniform 1/T)"
            )
            continue
        rel = None
        truth_path = find_truth(r)
        if truth_path is not None:
            rel = relevant_matrix(load_truth(truth_path), fw)
        loaded.append((r, VariantWeights(label=label, run_id=r.run_id, fw=fw, relevant=rel)))
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

    # Synthetic: share of weight on the true relevant frames.
    rows = []
    for r, v in loaded:
        if v.relevant is None:
            continue
        if v.fw.weights is not None:
            share, uni = relevant_weight_share(v.fw.weights, v.relevant, v.fw.mask)
            src = "weights"
        else:
            share, uni = gate_share(v.fw.gates, v.relevant, v.fw.mask)
            src = "gates"
        rows.append(
            {
                "variant": r.variant,
                "label": v.label,
                "run_id": r.run_id,
                "source": src,
                "share": share,
                "uniform_share": uni,
                "gain": share - uni,
            }
        )
    shares = pd.DataFrame(rows)
    if not shares.empty:
        fig, panels = plot_relevant_share(
            [(x["label"], x["share"], x["uniform_share"], x["source"]) for x in rows]
        )
        name = f"{prefix}relevant_share"
        figs.append(_figure_out(fig, panels, fig_dir, name, fig_formats,
                                "Share of weight on the true relevant frames vs uniform"))
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


# ------------------------------------------------------------------ MLflow artifacts
def log_report_artifacts(client: Any, run_id: str, out: ReportOutput, artifact_path: str = "report") -> None:
    """Copy the figures (PNG and PDF) and tables into ``run_id``'s artifacts."""
    for f in out.figures:
        for p in f.paths:
            client.log_artifact(run_id, str(p), f"{artifact_path}/figures")
    for _, paths in out.tables:
        for p in paths.values():
            client.log_artifact(run_id, str(p), f"{artifact_path}/tables")


# ------------------------------------------------------------------ everything
def build_report(
    client: Any,
    *,
    studies: list[str] | None = None,
    run_ids: list[str] | None = None,
    out: Path,
    experiment: str = DEFAULT_EXPERIMENT,
    videos: int = 4,
    formats: tuple[str, ...] = ("md", "tex", "html", "csv"),
    page: bool = True,
    log_artifacts: bool = True,
    title: str = "",
    command: str = "",
    tracking_uri: str = "",
    fig_formats: tuple[str, ...] = FIG_FORMATS,
) -> ReportOutput:
    """Tables + figures (+ index.html) for one or more studies, or for single runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportOutput(out_dir=out, studies=list(studies or []))
    groups: list[tuple[str, list[RunRecord], Any]] = []
    if studies:
        for s in studies:
            parent = find_study_parent(client, s, experiment)
            groups.append((s, load_runs(client, study=s, experiment=experiment), parent))
    elif run_ids:
        groups.append(
            ("", load_runs(client, run_ids=run_ids, experiment=experiment, finished_only=False), None)
        )
    else:
        raise ConfigError("give --study NAME (repeatable) or --run RUN_ID")
    for name, runs, parent in groups:
        if not runs:
            result.messages.append(f"study {name}: no finished runs yet")
            continue
        table = (
            (parent.data.tags.get("paper_table") or parent.data.tags.get("eabench.table")) if parent else None
        )
        table = table or _common_table(runs)
        result.runs.extend(runs)
        if formats:
            result.tables.extend(write_tables(runs, out / "tables", formats=formats, study=name, table=table))
        figs, shares, msgs = write_weight_figures(
            client, runs, out, videos=videos, table=table, prefix=name, fig_formats=fig_formats
        )
        result.figures.extend(_tagged(figs, name, len(groups)))
        result.messages.extend(f"{name}: {m}" if name else m for m in msgs)
        if not shares.empty:
            shares.insert(0, "study", name)
            result.shares = (
                shares if result.shares is None else pd.concat([result.shares, shares], ignore_index=True)
            )
        cfigs, cmsgs = write_curve_figures(
            client, runs, out, prefix=name, table=table, fig_formats=fig_formats
        )
        result.figures.extend(_tagged(cfigs, name, len(groups)))
        result.messages.extend(f"{name}: {m}" if name else m for m in cmsgs)
    if result.shares is not None:
        result.shares.to_csv(out / "relevant_share.csv", index=False)
    if page:
        from reports.page import write_page

        result.index = write_page(result, title=title, command=command, tracking_uri=tracking_uri)
    if log_artifacts:
        _log_all(client, groups, result)
    return result


def _tagged(figs: list[FigureOut], study: str, n_groups: int) -> list[FigureOut]:
    """Name the study in captions when a page shows several studies."""
    if study and n_groups > 1:
        for f in figs:
            f.caption = f"{study} — {f.caption}"
    return figs


def _common_table(runs: list[RunRecord]) -> str | None:
    tables = {r.paper_table for r in runs if r.paper_table}
    return tables.pop() if len(tables) == 1 else None


def _log_all(client: Any, groups: list[tuple[str, list[RunRecord], Any]], result: ReportOutput) -> None:
    """Figures go to the study's parent run (or to the single run they came from)."""
    try:
        for name, runs, parent in groups:
            target = (
                parent.info.run_id if parent is not None else (runs[0].run_id if len(runs) == 1 else None)
            )
            if target is None:
                continue
            key = f"{slug(name)}_" if name else ""
            sub = ReportOutput(
                out_dir=result.out_dir,
                figures=[f for f in result.figures if not key or f.name.startswith(key)],
                tables=[t for t in result.tables if t[0].study == name],
            )
            log_report_artifacts(client, target, sub)
            if result.index is not None:
                client.log_artifact(target, str(result.index), "report")
    except Exception as exc:  # a read-only or remote store must not lose the local report
        result.messages.append(f"could not log the report to MLflow: {exc}")
