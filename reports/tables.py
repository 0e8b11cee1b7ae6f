"""Paper-style result tables as data: rows = variants grouped by temporal type, T2V/V2T metric
columns, best / second marks, published reference rows with deltas.

``build_tables(runs_df)`` makes one :class:`ResultTable` per (dataset, protocol), so results of the
frozen and the paper protocol never share a table. :mod:`reports.table_render` writes them as
Markdown, LaTeX, HTML and CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import DataError
from harness.train.schema import DIRECTIONS, METRICS
from reports.labels import DATASET_NAMES, row_info, temporal_rank
from reports.ranks import RunRanks
from reports.significance import table_significance

__all__ = [
    "DECIMALS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "ResultTable",
    "aggregate_runs",
    "best_second",
    "build_tables",
    "load_reference",
]

HIGHER_IS_BETTER = {"R1": True, "R5": True, "R10": True, "R50": True, "MdR": False, "MnR": False}
METRIC_NAMES = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "R50": "R@50", "MdR": "MdR", "MnR": "MnR"}
# R@50 only where the paper prints it (ActivityNet); the engine logs it everywhere.
BASE_METRICS = tuple(m for m in METRICS if m != "R50")
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
            for m in METRICS:
                if m in r and pd.notna(r[m]):
                    rec[f"{d}/{m}"] = float(r[m])
                    any_number = True
        if any_number:
            out.append(rec)
    return out


# ------------------------------------------------------------------ aggregation
def aggregate_runs(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and seed count per (dataset, protocol, numerics, variant): runs
    trained with other numerics are never averaged together (docs/FIDELITY.md)."""
    metric_cols = [c for c in runs_df.columns if "/" in c and c.split("/")[0] in DIRECTIONS]
    runs_df = _with_numerics(runs_df)
    keys = ["dataset", "protocol", "numerics", "variant"]
    rows = []
    for key, g in runs_df.groupby(keys, sort=False):
        rec = dict(zip(keys, key))
        rec["n"] = len(g)
        rec["temporal"] = next((t for t in g["temporal"] if t), "")
        rec["paper_table"] = next((t for t in g["paper_table"] if t), "")
        rec["paper_label"] = next((t for t in g["paper_label"] if t), "")
        rec["run_ids"] = ",".join(g["run_id"])
        if "n_queries" in g:
            q = pd.to_numeric(g["n_queries"], errors="coerce").dropna()
            rec["n_queries"] = float(q.iloc[0]) if len(q) else np.nan
        if "skipped_steps" in g:  # summed over the row's seeds; NaN: no run logged the metric
            sk = pd.to_numeric(g["skipped_steps"], errors="coerce").dropna()
            rec["skipped_steps"] = float(sk.sum()) if len(sk) else np.nan
        for c in metric_cols:
            vals = g[c].astype(float).dropna()
            rec[c] = float(vals.mean()) if len(vals) else np.nan
            rec[f"{c}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        rows.append(rec)
    return pd.DataFrame(rows)


def _with_numerics(runs_df: pd.DataFrame) -> pd.DataFrame:
    """``runs_df`` with a ``numerics`` column ("" where a run did not record it)."""
    if "numerics" in runs_df:
        return runs_df.assign(numerics=runs_df["numerics"].fillna("").astype(str))
    return runs_df.assign(numerics="")


NUMERICS_NOTES = {
    "reference": "Numerics: reference (CLIP4Clip's: CLIP in fp16 trained in place, BertAdam), as the paper's runs.",
    "fast": "Numerics: fast (bf16 autocast, fp32 master weights, AdamW), not the authors'; it trains CLIP "
            "differently (docs/FIDELITY.md, 'Reference against fast numerics'), so compare these rows only "
            "with other fast runs.",
}


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
    numerics: str = ""  # of every run in the table ("" when the runs did not record it)
    name_suffix: str = ""  # "_<numerics>" when the same dataset and protocol also has a table of other numerics
    mde: float = float("nan")  # smallest Δ T2V R@1 the test set detects at 80 % power (points)
    queries: int | None = None  # test queries (T2V)

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.protocol}{self.name_suffix}"

    @property
    def delta_columns(self) -> list[str]:
        """Columns after the metrics: Δ base with its interval and Holm p, Δ ref, skipped steps."""
        out = []
        if "delta_base" in self.rows and self.rows["delta_base"].notna().any():
            out += ["delta_base", "ci_base", "p_holm"]
        if "delta_ref" in self.rows and self.rows["delta_ref"].notna().any():
            out.append("delta_ref")
        if "skipped_steps" in self.rows and (pd.to_numeric(self.rows["skipped_steps"], errors="coerce") > 0).any():
            out.append("skipped_steps")
        return out


def build_tables(
    runs_df: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    *,
    study: str = "",
    table: str | None = None,
    ranks: Mapping[str, RunRanks] | None = None,
) -> list[ResultTable]:
    """One table per (dataset, protocol, numerics) present in ``runs_df`` (see
    :func:`reports.runs.runs_frame`); a table's name carries its numerics only when its dataset and
    protocol have runs of both.

    ``ranks`` (run id -> per-query ranks, :func:`reports.ranks.load_ranks_for`) give every row's
    difference to its baseline an interval and a test, and make the best marks significance-aware
    (:mod:`reports.significance`); rows without ranks render with "n/a" intervals.
    """
    if runs_df.empty:
        return []
    ref = load_reference() if reference is None else reference
    agg = aggregate_runs(runs_df)
    out = []
    for (dataset, protocol), g in agg.groupby(["dataset", "protocol"], sort=True):
        modes = sorted(set(g["numerics"]))
        for numerics in modes:
            t = _build_one(g[g["numerics"] == numerics].reset_index(drop=True), ref, str(dataset), str(protocol),
                           study, table, ranks, numerics=str(numerics))
            if len(modes) > 1:
                t.name_suffix = f"_{numerics or 'unrecorded'}"
            out.append(t)
    return out


def _build_one(
    agg: pd.DataFrame, ref: pd.DataFrame, dataset: str, protocol: str, study: str, table: str | None,
    ranks: Mapping[str, RunRanks] | None = None, numerics: str = "",
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

    # ActivityNet: R@50 after R@10, as the paper's tables print it
    metrics = METRICS if dataset == "activitynet" else BASE_METRICS
    columns = [
        (d, m) for d in DIRECTIONS for m in metrics if f"{d}/{m}" in agg and agg[f"{d}/{m}"].notna().any()
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

    sig = table_significance(agg, columns, ranks, higher=HIGHER_IS_BETTER, decimals=DECIMALS)
    agg = agg.join(sig.rows)
    if sig.marks is not None:
        marks = sig.marks
    else:
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
    marks_txt = (
        "rows statistically tied with a marked value share its mark, and a column where every row ties "
        "has none (see notes)"
        if sig.marks is not None
        else "ranked on the displayed values"
    )
    caption = (
        f"{dname}, {protocol} protocol{f', {numerics} numerics' if numerics else ''}"
        f"{f' (study {study})' if study else ''}: text-to-video (T2V) "
        f"and video-to-text (V2T) retrieval, {seeds_txt}. Best measured value per column in bold, "
        f"second underlined; {marks_txt}. ↓ = lower is better."
    )
    notes = []
    if agg["delta_base"].notna().any():
        notes.append("Δ base: T2V R@1 minus the measured CLIP4Clip baseline of the same temporal type.")
    notes += sig.notes
    if "skipped_steps" in agg and (agg["skipped_steps"].fillna(0) > 0).any():
        notes.append(
            "skipped: training steps skipped for a non-finite loss or gradient (summed over the row's seeds); "
            "such a row trained on fewer updates than the others."
        )
    if agg["delta_ref"].notna().any():
        notes.append("Δ ref: T2V R@1 minus CLIP4Clip's published number for the same temporal type.")
    if ref_lines:
        notes.append(REFERENCE_NOTE)
        if protocol != "paper":
            notes.append(
                f"Measured rows use the {protocol} protocol, published rows the paper protocol: "
                f"they are shown side by side but are not directly comparable."
            )
    if numerics in NUMERICS_NOTES and protocol == "paper":
        notes.append(NUMERICS_NOTES[numerics])
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
        numerics=numerics,
        mde=sig.mde,
        queries=sig.queries,
    )
