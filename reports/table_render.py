"""Writing a :class:`~reports.tables.ResultTable`: Markdown (tabulate), LaTeX (pandas Styler,
booktabs), HTML and the CSV of the underlying numbers. Best values bold, second underlined.
"""

from __future__ import annotations

import html as html_lib
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.errors import DataError
from reports.labels import TYPE_NAMES
from reports.significance import SIG_MARK
from reports.tables import DECIMALS, HIGHER_IS_BETTER, METRIC_NAMES, ResultTable

__all__ = ["FORMATS", "latex_escape", "md_escape", "to_csv", "to_html", "to_latex", "to_markdown", "write_table"]

DELTA_NAMES = {
    "delta_base": "Δ base",
    "ci_base": "95 % CI",
    "p_holm": "p (Holm)",
    "delta_ref": "Δ ref",
    "skipped_steps": "skipped",
}
NA = "n/a"  # a row with a Δ base but no per-query ranks to test it


def _isnan(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _extra_cells(t: ResultTable, col: str, minus: str) -> list[str]:
    """Δ base (with the significance mark), its interval, the Holm p, Δ ref and skipped steps."""
    out = []
    for _, r in t.rows.iterrows():
        has_delta = not _isnan(r.get("delta_base", np.nan))
        if col == "delta_base":
            txt = _fmt_delta(r.get("delta_base", np.nan), minus)
            out.append(txt + (SIG_MARK if txt and r.get("significant") in (True,) else ""))
        elif col == "ci_base":
            lo, hi = r.get("delta_base_lo", np.nan), r.get("delta_base_hi", np.nan)
            out.append("" if not has_delta else NA if _isnan(lo) else
                       f"[{_fmt_signed(lo, minus)}, {_fmt_signed(hi, minus)}]")
        elif col == "p_holm":
            p = r.get("p_holm", np.nan)
            out.append("" if not has_delta else NA if _isnan(p) else _fmt_p(float(p)))
        elif col == "skipped_steps":
            v = pd.to_numeric(r.get("skipped_steps", np.nan), errors="coerce")
            out.append(f"{int(v)}" if not _isnan(v) and v > 0 else "")
        else:
            out.append(_fmt_delta(r.get(col, np.nan), minus))
    return out


def _fmt_signed(v: float, minus: str) -> str:
    s = f"{abs(v):.{DECIMALS}f}"
    return f"+{s}" if round(v, DECIMALS) > 0 else (f"{minus}{s}" if round(v, DECIMALS) < 0 else s)


def _fmt_num(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{DECIMALS}f}"


def _fmt_delta(v: float, minus: str = "−") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    s = f"{abs(v):.{DECIMALS}f}"
    return f"+{s}" if round(v, DECIMALS) > 0 else (f"{minus}{s}" if round(v, DECIMALS) < 0 else f"±{s}")


def _cells(t: ResultTable, pm: str, minus: str, dash: str = "–") -> pd.DataFrame:
    """Display strings of every metric/delta cell."""
    out = {}
    for d, m in t.columns:
        col = f"{d}/{m}"
        vals = []
        for _, r in t.rows.iterrows():
            v = r.get(col, np.nan)
            s = r.get(f"{col}_std", np.nan)
            txt = _fmt_num(v)
            if txt == "–":
                txt = dash
            elif isinstance(s, float) and not math.isnan(s):
                txt = f"{txt}{pm}{s:.{DECIMALS}f}"
            vals.append(txt)
        out[col] = vals
    for c in t.delta_columns:
        out[c] = _extra_cells(t, c, minus)
    return pd.DataFrame(out, index=t.rows.index)


def _header(d: str, m: str, arrow_up: str, arrow_down: str) -> str:
    return f"{METRIC_NAMES[m]}{arrow_up if HIGHER_IS_BETTER[m] else arrow_down}"


def _group_label(g: str) -> str:
    return "published" if g == "published" else TYPE_NAMES.get(g, g)


def _mark_of(t: ResultTable, i: int, col: str) -> str:
    if col in t.marks and i in t.marks.index:
        return t.marks.at[i, col]
    return ""


def md_escape(text: str) -> str:
    """Text for a Markdown table cell or line: HTML made inert (``<script>`` -> ``&lt;script&gt;``,
    which Markdown renders as the literal text), pipes that would split a cell, and emphasis marks."""
    out = html_lib.escape(str(text), quote=False)
    for ch in ("\\", "|", "*", "_", "`", "[", "]"):
        out = out.replace(ch, "\\" + ch)
    return out


def to_markdown(t: ResultTable) -> str:
    """GitHub pipe table: **bold** best, <u>underlined</u> second, notes and sources below.

    Every label, caption, note and source is escaped (:func:`md_escape`): a run's tag cannot inject
    HTML into a page that renders the Markdown.
    """
    cells = _cells(t, " ± ", "−").map(md_escape)
    headers = ["Type", "Row"] + [f"{d.upper()} {_header(d, m, '↑', '↓')}" for d, m in t.columns]
    headers += [md_escape(DELTA_NAMES[c]) for c in t.delta_columns]
    body = []
    prev = None
    for i, r in t.rows.iterrows():
        grp = md_escape(_group_label(r["group"])) if r["group"] != prev else ""
        prev = r["group"]
        line = [grp, md_escape(str(r["label"]))]
        for d, m in t.columns:
            col = f"{d}/{m}"
            txt, mk = cells.at[i, col], _mark_of(t, i, col)
            line.append(f"**{txt}**" if mk == "best" else f"<u>{txt}</u>" if mk == "second" else txt)
        line += [cells.at[i, c] for c in t.delta_columns]
        body.append(line)
    colalign = ["left", "left"] + ["right"] * (len(headers) - 2)
    table = tabulate(body, headers=headers, tablefmt="github", colalign=colalign, disable_numparse=True)
    parts = [f"**Table: {md_escape(t.caption)}**", "", table, ""]
    parts += [f"- {md_escape(n)}" for n in t.notes]
    parts += [f"- \\[{k}\\] {md_escape(s)}" for k, s in enumerate(t.sources, 1)]
    return "\n".join(parts) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "Δ": r"$\Delta$",
    "±": r"$\pm$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "−": "-",
    "–": "--",
    "—": "---",
    "†": r"$^{\dagger}$",
    "✓": r"$\checkmark$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "[": "{[}",  # after a row's \\ a bracket would be read as its optional argument
    "]": "{]}",
    "|": r"\textbar{}",
    "α": r"$\alpha$",
    "ψ": r"$\psi$",
    "δ": r"$\delta$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "“": "``",
    "”": "''",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _styler_frame(
    t: ResultTable, pm: str, minus: str, esc, dash: str = "–"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = _cells(t, pm, minus, dash)
    cols = [(d.upper(), esc(_header(d, m, "↑", "↓"))) for d, m in t.columns]
    cols += [("", esc(DELTA_NAMES[c])) for c in t.delta_columns]
    data = cells[[f"{d}/{m}" for d, m in t.columns] + t.delta_columns].map(esc).to_numpy()
    index = pd.MultiIndex.from_arrays(
        [[esc(_group_label(g)) for g in t.rows["group"]], [esc(lab) for lab in t.rows["label"]]]
    )
    frame = pd.DataFrame(data, index=index, columns=pd.MultiIndex.from_tuples(cols))
    marks = pd.DataFrame("", index=index, columns=frame.columns)
    for j, (d, m) in enumerate(t.columns):
        for i in range(len(t.rows)):
            marks.iat[i, j] = _mark_of(t, t.rows.index[i], f"{d}/{m}")
    return frame, marks


def to_latex(t: ResultTable, label: str | None = None) -> str:
    """LaTeX table (booktabs via ``Styler.to_latex(hrules=True)``), \\textbf best, \\underline second."""
    frame, marks = _styler_frame(t, " ± ", "−", latex_escape)
    props = marks.replace({"best": "textbf:--rwrap;", "second": "underline:--rwrap;", "": ""})
    sty = frame.style.apply(lambda _: props, axis=None).hide(axis="index", names=True)
    caption = latex_escape(t.caption)
    tex = sty.to_latex(
        hrules=True,
        caption=caption,
        label=label or f"tab:{t.name}",
        column_format="ll" + "r" * frame.shape[1],
        multicol_align="c",
        multirow_align="t",
        clines="skip-last;data",
        position_float="centering",
    )
    notes = t.notes + [f"[{k}] {s}" for k, s in enumerate(t.sources, 1)]
    if notes:
        foot = "\\par\\footnotesize\n" + "\\\\\n".join(latex_escape(n) for n in notes) + "\n"
        tex = tex.replace("\\end{table}", foot + "\\end{table}")
    return tex


def to_html(t: ResultTable, full_page: bool = False) -> str:
    """HTML table (Styler) with CSS bold/underline marks; notes and sources under it."""
    frame, marks = _styler_frame(t, " ± ", "−", lambda s: s)
    props = marks.replace({"best": "font-weight: bold;", "second": "text-decoration: underline;", "": ""})
    sty = (
        frame.style.apply(lambda _: props, axis=None)
        .format(escape="html")
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
        .set_caption(html_lib.escape(t.caption))
        .set_table_attributes('class="eabench-table"')
        .set_table_styles(
            [
                {"selector": "td", "props": "text-align: right; padding: 2px 8px;"},
                {"selector": "th", "props": "padding: 2px 8px;"},
                {"selector": "caption", "props": "caption-side: top; text-align: left;"},
            ]
        )
    )
    body = sty.to_html()
    notes = "".join(f"<li>{html_lib.escape(n)}</li>" for n in t.notes)
    notes += "".join(f"<li>[{k}] {html_lib.escape(s)}</li>" for k, s in enumerate(t.sources, 1))
    frag = f'<div class="table-block">{body}<ul class="notes">{notes}</ul></div>'
    if full_page:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(t.name)}</title>"
            f"</head><body>{frag}</body></html>\n"
        )
    return frag


def to_csv(t: ResultTable) -> str:
    """The underlying numbers: means, stds, seed counts, deltas and sources, nothing rounded."""
    cols = ["kind", "group", "label", "variant", "n"]
    for d, m in t.columns:
        cols += [f"{d}/{m}", f"{d}/{m}_std"]
    cols += ["delta_base", "delta_base_lo", "delta_base_hi", "p_base", "p_holm", "significant", "test_base",
             "delta_ref", "skipped_steps", "n_queries", "run_ids", "method", "source"]
    df = t.rows.reindex(columns=cols)
    df.insert(0, "numerics", t.numerics)
    df.insert(0, "protocol", t.protocol)
    df.insert(0, "dataset", t.dataset)
    return df.to_csv(index=False)


FORMATS = {"md": to_markdown, "tex": to_latex, "html": lambda t: to_html(t, full_page=True), "csv": to_csv}


def write_table(
    t: ResultTable,
    out_dir: Path,
    formats: tuple[str, ...] = ("md", "tex", "html", "csv"),
    stem: str | None = None,
) -> dict[str, Path]:
    """Write ``table_<dataset>_<protocol>.<fmt>`` files; returns {fmt: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise DataError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
        p = out_dir / f"{stem or 'table_' + t.name}.{fmt}"
        p.write_text(FORMATS[fmt](t), encoding="utf-8")
        paths[fmt] = p
    return paths
