"""Assembling a report: tables, frame-weight figures, curves and the page, from MLflow runs.

These are the functions the CLI (``eabench report ...``) and ``eabench reproduce`` call; a notebook
can call them too::

    client = open_client(root="runs")
    out = build_report(client, studies=["meanP-synthetic-frozen"], out=Path("reports_out"))
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import ConfigError
from harness.tracking import DEFAULT_EXPERIMENT
from harness.train.schema import TAG_PAPER_TABLE
from reports.page import write_page
from reports.ranks import RunRanks, load_ranks_for
from reports.report_figures import FIG_FORMATS, slug, write_curve_figures, write_weight_figures
from reports.runs import RunRecord, find_study_parent, load_runs, runs_frame
from reports.table_render import write_table
from reports.tables import ResultTable, build_tables
from reports.weight_figures import FigureOut

__all__ = [
    "FIG_FORMATS",
    "LOGGED_TABLE_FORMATS",
    "ReportOutput",
    "build_report",
    "log_report_artifacts",
    "log_tables",
    "slug",
    "write_curve_figures",
    "write_tables",
    "write_weight_figures",
]

LOGGED_TABLE_FORMATS = ("md", "csv")  # always attached to a study's parent run, whatever --format says


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
    experiment_id: str = ""  # for the runs-table URL of mlflow ui

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (``--json``)."""
        return {
            "out_dir": str(self.out_dir),
            "index": str(self.index) if self.index else None,
            "studies": self.studies,
            "experiment_id": self.experiment_id,
            "runs": [r.run_id for r in self.runs],
            "tables": [
                {"dataset": t.dataset, "protocol": t.protocol, "numerics": t.numerics,
                 "files": {k: str(v) for k, v in p.items()}}
                for t, p in self.tables
            ],
            "figures": [
                {"name": f.name, "files": [str(x) for x in f.paths], "panels": f.panels} for f in self.figures
            ],
            "relevant_share": [] if self.shares is None else [
                {k: None if isinstance(v, float) and v != v else v for k, v in rec.items()}  # NaN is not JSON
                for rec in self.shares.to_dict(orient="records")
            ],
            "messages": self.messages,
        }


# ------------------------------------------------------------------ tables

def write_tables(
    runs: list[RunRecord],
    out: Path,
    *,
    formats: tuple[str, ...] = ("md", "tex", "html", "csv"),
    study: str = "",
    table: str | None = None,
    ranks: Mapping[str, RunRanks] | None = None,
) -> list[tuple[ResultTable, dict[str, Path]]]:
    """One table per (dataset, protocol) in ``runs``, each in every format. ``ranks`` (run id ->
    per-query ranks, :func:`reports.ranks.load_ranks_for`) add the intervals and tests."""
    df = runs_frame(runs)
    written = []
    for t in build_tables(df, study=study, table=table, ranks=ranks):
        stem = f"table_{slug(study) + '_' if study else ''}{t.name}"
        written.append((t, write_table(t, out, formats, stem=stem)))
    return written


# ------------------------------------------------------------------ MLflow artifacts
def log_tables(
    client: Any, run_id: str, tables: list[tuple[ResultTable, dict[str, Path]]], artifact_path: str = "report"
) -> None:
    """Attach the tables to ``run_id`` (a study's parent run): every written format, and always the
    Markdown and CSV (rendered here when the report did not write them)."""
    with tempfile.TemporaryDirectory() as tmp:
        for t, paths in tables:
            files = dict(paths)
            missing = tuple(f for f in LOGGED_TABLE_FORMATS if f not in files)
            if missing:
                stem = f"table_{slug(t.study) + '_' if t.study else ''}{t.name}"
                files.update(write_table(t, Path(tmp), missing, stem=stem))
            for p in files.values():
                client.log_artifact(run_id, str(p), f"{artifact_path}/tables")


def log_report_artifacts(client: Any, run_id: str, out: ReportOutput, artifact_path: str = "report") -> None:
    """Copy the figures (PNG and PDF) and tables (:func:`log_tables`) into ``run_id``'s artifacts."""
    for f in out.figures:
        for p in f.paths:
            client.log_artifact(run_id, str(p), f"{artifact_path}/figures")
    log_tables(client, run_id, out.tables, artifact_path)


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
    result = ReportOutput(out_dir=out, studies=list(studies or []), experiment_id=_experiment_id(client, experiment))
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
        table = (parent.data.tags.get(TAG_PAPER_TABLE) if parent else None) or _common_table(runs)
        result.runs.extend(runs)
        if formats:
            ranks = load_ranks_for(client, [r.run_id for r in runs])
            result.tables.extend(
                write_tables(runs, out / "tables", formats=formats, study=name, table=table, ranks=ranks)
            )
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


def _experiment_id(client: Any, experiment: str) -> str:
    try:
        exp = client.get_experiment_by_name(experiment)
    except Exception:  # an unreachable store: the page just omits the runs-table link
        return ""
    return str(exp.experiment_id) if exp is not None else ""


def _common_table(runs: list[RunRecord]) -> str | None:
    tables = {r.paper_table for r in runs if r.paper_table}
    return tables.pop() if len(tables) == 1 else None


def _log_all(client: Any, groups: list[tuple[str, list[RunRecord], Any]], result: ReportOutput) -> None:
    """Figures and tables go to the study's parent run (or to the single run they came from)."""
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
