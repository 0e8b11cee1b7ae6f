"""The static report page: one ``index.html`` beside the tables and figures, relative links only,
so the folder can be opened from disk, zipped or served by any static host."""

from __future__ import annotations

import datetime as _dt
import os
from importlib import resources
from pathlib import Path
from typing import Any

from reports.tables import to_html

__all__ = ["mlflow_ui_command", "write_page"]

SECTIONS = (
    (
        "video_",
        "Frame weights per video",
        "Thumbnails of the sampled frames (query above), excitation gates (0-1) and aggregation "
        "weights per frame; the dashed line is the uniform 1/T of mean pooling; grey = padding; "
        "green = true relevant frames.",
    ),
    (
        "heatmap",
        "Weights over the test set",
        "Rows are test videos, columns frame positions, padding grey. Aggregation weights are shown as "
        "weight × T (white = uniform, red = above, blue = below); excitation-only variants show their gates.",
    ),
    (
        "entropy",
        "Weight entropy",
        "Entropy of each video's aggregation weights over its real frames divided by "
        "log T: 1 is uniform (mean pooling), lower is more peaked.",
    ),
    ("relevant_share", "Share of weight on relevant frames", ""),
    ("ratio_curve", "Reduction-ratio ablation", ""),
    ("training_curves", "Training curves", ""),
)


def mlflow_ui_command(tracking_uri: str) -> str:
    return f"mlflow ui --backend-store-uri {tracking_uri or 'sqlite:///runs/mlflow.db'}"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_page(report: Any, *, title: str = "", command: str = "", tracking_uri: str = "") -> Path:
    """Render ``index.html`` for a :class:`reports.build.ReportOutput` and return its path."""
    import jinja2

    out: Path = report.out_dir
    tpl_text = (resources.files("reports") / "templates" / "index.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(default=True))
    tpl = env.from_string(tpl_text)

    tables = []
    for t, paths in report.tables:
        links = [(fmt.upper() if fmt != "tex" else "LaTeX", _rel(p, out)) for fmt, p in paths.items()]
        tables.append({"html": to_html(t), "links": links})

    def fig_entry(f: Any) -> dict[str, str]:
        png = next((p for p in f.paths if p.suffix == ".png"), f.paths[0])
        pdf = next((p for p in f.paths if p.suffix == ".pdf"), None)
        return {"png": _rel(png, out), "pdf": _rel(pdf, out) if pdf else "", "caption": f.caption or f.name}

    sections = []
    for key, sec_title, text in SECTIONS:
        figs = [fig_entry(f) for f in report.figures if _kind(f.name) == key]
        sections.append({"title": sec_title, "text": text, "figures": figs})

    datasets = sorted({t.dataset for t, _ in report.tables})
    protocols = sorted({t.protocol for t, _ in report.tables})
    shares = [] if report.shares is None else report.shares.to_dict(orient="records")
    html = tpl.render(
        title=title or "EA-Bench report",
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        studies=report.studies,
        datasets=datasets,
        protocols=protocols,
        n_runs=len(report.runs),
        synthetic="synthetic" in datasets,
        frozen="frozen" in protocols,
        messages=report.messages,
        tables=tables,
        shares=shares,
        sections=sections,
        mlflow_cmd=mlflow_ui_command(tracking_uri),
        command=command,
    )
    path = out / "index.html"
    path.write_text(html, encoding="utf-8")
    return path


def _kind(name: str) -> str:
    """Which page section a figure name belongs to (names are ``[<study>_]<kind>...``)."""
    for key, _, _ in SECTIONS:
        if name.startswith(key) or f"_{key}" in name:
            return key
    return ""
