"""Paper-style result tables: rows = variants grouped by temporal type, T2V/V2T metric columns,
best bold / second underlined, published reference rows with deltas.

``build_tables(runs_df)`` makes one :class:`ResultTable` per (dataset, protocol), so results of the
frozen and the paper protocol never share a table; renderers write Markdown (tabulate), LaTeX
(pandas Styler, booktabs), HTML and the CSV of the underlying numbers.
"""

from __future__ import annotations

import html as html_lib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import DataError
from reports.labels import DATASET_NAMES, TYPE_NAMES, row_info, temporal_rank

__all__ = [
    "HIGHER_IS_BETTER",
    "ResultTable",
    "aggregate_runs",
    "best_second",
    "build_tables",
    "load_reference",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
    "write_table",
]

HIGHER_IS_BETTER = {"R1": True, "R5": True, "R10": True, "R50": True, "MdR": False, "MnR": False}
METRIC_NAMES = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "R50": "R@50", "MdR": "MdR", "MnR": "MnR"}
DELTA_NAMES = {"delta_base": "Δ base", "delta_ref": "Δ ref"}
BASE_METRICS = ("R1", "R5", "R10", "MdR", "MnR")
DECIMALS = 1  # retrieval papers print every metric with one decimal (STACK.md §4.1)

REFERENCE_NOTE = (
    "Published rows: ViT-B/32 CLIP fully fine-tuned on the real dataset (paper protocol), "
    "as reported by the cited sources."
)


# ------------------------------------------------------------------ reference numbers
def load_reference(path: Path | None = None) -> pd.DataFrame:
    """``reports/reference_numbers.csv`` (or ``path``): published numbers, one row per direction."""
    if path is None:
        with resources.as_file(resources.files("reports") / "reference_numbers.csv") as p:
            df = pd.read_csv(p)
    else:
        df = pd.read_csv(path)
    need = {"method", "dataset", "direction", "calculator", "R1", "sources"}
    missing = need - set(df.columns)
    if missing:
        raise DataError(f"{path or 'reports/reference_numbers.csv'}: missing columns {sorted(missing)}")
    return df


def _reference_rows(ref: pd.DataFrame, dataset: str, temporals: list[str]) -> list[dict]:
    """CLIP4Clip's published rows for the table's temporal types, then the paper's headline.

    CSV rows are per direction; here they are merged into one row per (method, calculator).
    Rows with no number at all ("not available") are left out.
    """
    name = DATASET_NAMES.get(dataset, dataset)
    sub = ref[ref["dataset"] == name]
    wanted = [("CLIP4Clip", t) for t in temporals] + [("EA-CLIP4Clip (best variant)", None)]
    out = []
    for method, calc in wanted:
        rows = sub[sub["method"] == method]
        if calc is not None:
            rows = rows[rows["calculator"] == calc]
        if rows.empty:
            continue
        rec: dict = {
            "method": method,
            "calculator": calc or str(rows["calculator"].iloc[0]),
            "split": str(rows["split"].iloc[0]) if "split" in rows else "",
            "status": "; ".join(str(s) for s in rows.get("status", pd.Series()).dropna().unique()),
            "source": "; ".join(
                dict.fromkeys(part.strip() for s in rows["sources"].dropna() for part in str(s).split("; "))
            ),
        }
        any_number = False
        for _, r in rows.iterrows():
            d = str(r["direction"])
            for m in METRIC_NAMES:
                if m in r and pd.notna(r[m]):
                    rec[f"{d}/{m}"] = float(r[m])
                    any_number = True
        if any_number:
            out.append(rec)
    return out


# ------------------------------------------------------------------ aggregation
def aggregate_runs(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count per (dataset, protocol, variant)."""
    metric_cols = [c for c in runs_df.columns if "/" in c and c.split("/")[0] in ("t2v", "v2t")]
    keys = ["dataset", "protocol", "variant"]
    rows = []
    for key, g in runs_df.groupby(keys, sort=False):
        rec = dict(zip(keys, key))
        rec["n"] = len(g)
        rec["temporal"] = next((t for t in g["temporal"] if t), "")
        rec["paper_table"] = next((t for t in g["paper_table"] if t), "")
        rec["paper_label"] = next((t for t in g["paper_label"] if t), "")
        rec["run_ids"] = ",".join(g["run_id"])
        for c in metric_cols:
            vals = g[c].astype(float).dropna()
            rec[c] = float(vals.mean()) if len(vals) else np.nan
            rec[f"{c}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        rows.append(rec)
    return pd.DataFrame(rows)


def best_second(values: pd.Series, higher: bool = True, decimals: int = DECIMALS) -> pd.Series:
    """ "best" / "second" / "" per cell, ranked on the values *as displayed* (rounded).

    Competition ranking (``method="min"``, STACK.md §4.2): ties share the mark; two values tied
    for best are both bold and nothing is underlined (the next value ranks third).
    """
    r = values.astype(float).round(decimals).rank(method="min", ascending=not higher)
    return r.map(lambda v: "best" if v == 1 else "second" if v == 2 else "")


# ------------------------------------------------------------------ the table
@dataclass
class ResultTable:
    dataset: str
    protocol: str
    columns: list[tuple[str, str]]  # (direction, metric) in display order
    rows: pd.DataFrame  # one row per displayed line (measured, then published)
    marks: pd.DataFrame  # "best"/"second"/"" per measured cell, keyed like rows
    caption: str
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # [k] -> source text
    study: str = ""

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.protocol}"

    @property
    def delta_columns(self) -> list[str]:
        return [c for c in ("delta_base", "delta_ref") if c in self.rows and self.rows[c].notna().any()]


def _fmt_num(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{DECIMALS}f}"


def _fmt_delta(v: float, minus: str = "−") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    s = f"{abs(v):.{DECIMALS}f}"
    return f"+{s}" if round(v, DECIMALS) > 0 else (f"{minus}{s}" if round(v, DECIMALS) < 0 else f"±{s}")


def build_tables(
    runs_df: pd.DataFrame, reference: pd.DataFrame | None = None, *, study: str = "", table: str | None = None
) -> list[ResultTable]:
    """One table per (dataset, protocol) present in ``runs_df`` (see :func:`reports.runs.runs_frame`)."""
    if runs_df.empty:
        return []
    ref = load_reference() if reference is None else reference
    agg = aggregate_runs(runs_df)
    out = []
    for (dataset, protocol), g in agg.groupby(["dataset", "protocol"], sort=True):
        out.append(_build_one(g.reset_index(drop=True), ref, str(dataset), str(protocol), study, table))
    return out


def _build_one(
    agg: pd.DataFrame, ref: pd.DataFrame, dataset: str, protocol: str, study: str, table: str | None
) -> ResultTable:
    info = [
        row_info(v, table or (pt or None), lab, tmp)
        for v, pt, lab, tmp in zip(agg["variant"], agg["paper_table"], agg["paper_label"], agg["temporal"])
    ]
    agg = agg.assign(
        label=[i.label for i in info],
        group=[i.temporal for i in info],
        order=[i.order for i in info],
        is_baseline=[i.is_baseline for i in info],
    )
    agg["grank"] = agg["group"].map(temporal_rank)
    agg = agg.sort_values(["grank", "order", "label"], kind="stable").reset_index(drop=True)

    metrics = list(BASE_METRICS)
    # R@50 only where the paper prints it (ActivityNet); the engine logs it everywhere.
    if dataset == "activitynet" and any(
        f"{d}/R50" in agg and agg[f"{d}/R50"].notna().any() for d in ("t2v", "v2t")
    ):
        metrics.insert(3, "R50")  # ActivityNet: R@50 after R@10, as the paper's tables print it
    columns = [
        (d, m) for d in ("t2v", "v2t") for m in metrics if f"{d}/{m}" in agg and agg[f"{d}/{m}"].notna().any()
    ]

    # Δ base: T2V R@1 against the measured CLIP4Clip baseline of the same temporal type.
    base = {r.group: r["t2v/R1"] for _, r in agg.iterrows() if r.is_baseline}
    agg["delta_base"] = [
        r["t2v/R1"] - base[r.group] if r.group in base and not r.is_baseline else np.nan
        for _, r in agg.iterrows()
    ]

    groups = list(dict.fromkeys(agg["group"]))
    refs = _reference_rows(ref, dataset, groups)
    ref_r1 = {r["calculator"]: r.get("t2v/R1", np.nan) for r in refs if r["method"] == "CLIP4Clip"}
    agg["delta_ref"] = [r["t2v/R1"] - ref_r1.get(r.group, np.nan) for _, r in agg.iterrows()]

    marks = pd.DataFrame("", index=agg.index, columns=[f"{d}/{m}" for d, m in columns])
    for d, m in columns:
        marks[f"{d}/{m}"] = best_second(agg[f"{d}/{m}"], HIGHER_IS_BETTER[m])

    rows = agg.assign(kind="measured", source_ref="")
    sources: list[str] = []
    ref_lines = []
    for r in refs:
        status = f" (status: {r['status']})" if r.get("status") else ""
        sources.append(f"{r['source']}{status}")
        k = len(sources)
        label = (
            f"{r['method']}-{r['calculator']} (published) [{k}]"
            if r["method"] == "CLIP4Clip"
            else f"{r['method']}, paper headline [{k}]"
        )
        ref_lines.append(
            {
                **r,
                "kind": "published",
                "label": label,
                "group": "published",
                "variant": "",
                "n": np.nan,
                "source_ref": str(k),
            }
        )
    if ref_lines:
        rows = pd.concat([rows, pd.DataFrame(ref_lines)], ignore_index=True)

    dname = DATASET_NAMES.get(dataset, dataset)
    nseeds = sorted({int(n) for n in agg["n"]})
    seeds_txt = (
        f"mean ± std over {'/'.join(map(str, nseeds))} seeds" if max(nseeds) > 1 else "one seed per row"
    )
    caption = (
        f"{dname}, {protocol} protocol{f' (study {study})' if study else ''}: text-to-video (T2V) "
        f"and video-to-text (V2T) retrieval, {seeds_txt}. Best measured value per column in bold, "
        f"second underlined (on the displayed values; ↓ = lower is better)."
    )
    notes = []
    if agg["delta_base"].notna().any():
        notes.append("Δ base: T2V R@1 minus the measured CLIP4Clip baseline of the same temporal type.")
    if agg["delta_ref"].notna().any():
        notes.append("Δ ref: T2V R@1 minus CLIP4Clip's published number for the same temporal type.")
    if ref_lines:
        notes.append(REFERENCE_NOTE)
        if protocol != "paper":
            notes.append(
                f"Measured rows use the {protocol} protocol, published rows the paper protocol: "
                f"they are shown side by side but are not directly comparable."
            )
    if protocol == "frozen":
        notes.append(
            "Frozen protocol: CLIP stays fixed and only the heads train (not the paper's full fine-tuning)."
        )
    return ResultTable(
        dataset=dataset,
        protocol=protocol,
        columns=columns,
        rows=rows,
        marks=marks,
        caption=caption,
        notes=notes,
        sources=sources,
        study=study,
    )


# ------------------------------------------------------------------ rendering
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
        out[c] = [_fmt_delta(v, minus) for v in t.rows[c]]
    return pd.DataFrame(out, index=t.rows.index)


def _header(d: str, m: str, arrow_up: str, arrow_down: str) -> str:
    return f"{METRIC_NAMES[m]}{arrow_up if HIGHER_IS_BETTER[m] else arrow_down}"


def _group_label(g: str) -> str:
    return "published" if g == "published" else TYPE_NAMES.get(g, g)


def _mark_of(t: ResultTable, i: int, col: str) -> str:
    if col in t.marks and i in t.marks.index:
        return t.marks.at[i, col]
    return ""


def to_markdown(t: ResultTable) -> str:
    """GitHub pipe table: **bold** best, <u>underlined</u> second, notes and sources below."""
    cells = _cells(t, " ± ", "−")
    headers = ["Type", "Row"] + [f"{d.upper()} {_header(d, m, '↑', '↓')}" for d, m in t.columns]
    headers += [DELTA_NAMES[c] for c in t.delta_columns]
    body = []
    prev = None
    for i, r in t.rows.iterrows():
        grp = _group_label(r["group"]) if r["group"] != prev else ""
        prev = r["group"]
        line = [grp, str(r["label"])]
        for d, m in t.columns:
            col = f"{d}/{m}"
            txt, mk = cells.at[i, col], _mark_of(t, i, col)
            line.append(f"**{txt}**" if mk == "best" else f"<u>{txt}</u>" if mk == "second" else txt)
        line += [cells.at[i, c] for c in t.delta_columns]
        body.append(line)
    from tabulate import tabulate

    colalign = ["left", "left"] + ["right"] * (len(headers) - 2)
    table = tabulate(body, headers=headers, tablefmt="github", colalign=colalign, disable_numparse=True)
    parts = [f"**Table: {t.caption}**", "", table, ""]
    parts += [f"- {n}" for n in t.notes]
    parts += [f"- [{k}] {s}" for k, s in enumerate(t.sources, 1)]
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
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _styler_frame(
    t: ResultTable, pm: str, minus: str, esc, dash: str = "–"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = _cells(t, pm, minus, dash)
    cols = [(d.upper(), esc(_header(d, m, "↑", "↓"))) for d, m in t.columns]
    cols += [("", esc(DELTA_NAMES[c])) for c in t.delta_columns]
    data = cells[[f"{d}/{m}" for d, m in t.columns] + t.delta_columns].to_numpy()
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
    frame, marks = _styler_frame(t, r" $\pm$ ", "-", latex_escape, dash="--")
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
    cols += ["delta_base", "delta_ref", "run_ids", "method", "source"]
    df = t.rows.reindex(columns=cols)
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
