"""The static report page: one ``index.html`` beside the tables and figures, relative links only,
so the folder can be opened from disk, zipped or served by any static host."""

from __future__ import annotations

import datetime as _dt
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from harness.tracking import mlflow_ui_command, redact_uri, runs_table_url
from reports.table_render import to_html

__all__ = ["redact_command", "write_page"]


SECTIONS = (
    (
        "video_",
        "Frame weights per video",
        "Thumbnails of the sampled frames (query above), excitation gates (0-1) and aggregation "
        "weights per frame; the dashed line is the uniform 1/T of mean pooling; grey = padding; "
        "green = true relevant frames (synthetic benchmark) or annotated moments (DiDeMo, ActivityNet).",
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
    ("relevant_share", "Share of weight on relevant frames or annotated moments", ""),
    ("ratio_curve", "Reduction-ratio ablation", ""),
    ("training_curves", "Training curves", ""),
)


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_SECRET_VALUE_FLAGS = ("--tracking-uri", "--storage")


def redact_command(command: str) -> str:
    """A command line safe to show: every URI-looking part (also inside ``KEY=VALUE``) and the
    values of ``--tracking-uri`` / ``--storage`` pass through :func:`harness.tracking.redact_uri`."""
    words = command.split(" ")
    out = []
    for i, w in enumerate(words):
        flag, eq, value = w.partition("=")
        if eq and flag in _SECRET_VALUE_FLAGS:
            w = f"{flag}={redact_uri(value)}"
        elif i > 0 and words[i - 1] in _SECRET_VALUE_FLAGS:
            w = redact_uri(w)
        out.append(_URI.sub(lambda m: redact_uri(m.group(0)), w))
    return " ".join(out)


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_page(report: Any, *, title: str = "", command: str = "", tracking_uri: str = "") -> Path:
    """Render ``index.html`` for a :class:`reports.build.ReportOutput` and return its path."""
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
        runs_url=runs_table_url(report.experiment_id) if getattr(report, "experiment_id", "") else "",
        command=redact_command(command),
        shares_what=_shares_what(shares),
    )
    path = out / "index.html"
    path.write_text(html, encoding="utf-8")
    return path


def _shares_what(shares: list[dict[str, Any]]) -> str:
    kinds = {str(s.get("frames", "true relevant frames")) for s in shares}
    return kinds.pop() if len(kinds) == 1 else "relevant frames or annotated moments"


def _kind(name: str) -> str:
    """Which page section a figure name belongs to (names are ``[<study>_]<kind>...``)."""
    for key, _, _ in SECTIONS:
        if name.startswith(key) or f"_{key}" in name:
            return key
    return ""
