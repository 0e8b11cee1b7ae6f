"""Paper row labels, table grouping and row order for variant names.

The variant registry (``variants``) is the source of truth; the run's own tags
(``paper_label``, ``paper_table``) come next, and a plain rule last, so a report of runs
made with an unregistered variant still renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from variants import VariantSpec, get_variant, list_variants, parse_variant_name, table_variants

__all__ = ["DATASET_NAMES", "TEMPORAL_ORDER", "RowInfo", "parse_spec", "row_info"]

# The paper groups rows by similarity calculator in this order (PAPER.md §6.1).
TEMPORAL_ORDER: tuple[str, ...] = ("meanP", "seqLSTM", "seqTransf", "tightTransf")
TYPE_NAMES = {
    "meanP": "parameter-free (meanP)",
    "seqLSTM": "sequential (seqLSTM)",
    "seqTransf": "sequential (seqTransf)",
    "tightTransf": "tight (tightTransf)",
}

# Run tag `dataset` -> the dataset name used in reference_numbers.csv and captions.
DATASET_NAMES = {
    "msrvtt": "MSR-VTT",
    "activitynet": "ActivityNet Captions",
    "didemo": "DiDeMo",
    "synthetic": "Synthetic (embedded benchmark)",
}


@dataclass(frozen=True)
class RowInfo:
    label: str  # the paper's row label, e.g. "(6) expand aggregation (1/4)"
    temporal: str  # group key
    order: int  # position in the paper's table (registry order)
    is_baseline: bool


def parse_spec(name: str) -> VariantSpec | None:
    """The VariantSpec of a name, or None when it does not parse."""
    try:
        return parse_variant_name(name)
    except (ValueError, TypeError):
        return None


@lru_cache(maxsize=1)
def _registry_order() -> dict[str, int]:
    return {name: i for i, name in enumerate(list_variants("*"))}


def row_info(variant: str, table: str | None = None, tag_label: str = "", tag_temporal: str = "") -> RowInfo:
    """Label, group and order of ``variant`` as a row of ``table`` (its primary table if None)."""
    spec = parse_spec(variant)
    temporal = tag_temporal or (spec.temporal if spec is not None else variant.split("_")[0])
    is_base = bool(spec.is_baseline) if spec is not None else variant == temporal
    order = _registry_order().get(variant, 10_000)
    if table and table.startswith("ratio") and spec is not None:
        # Ratio ablations read best in ratio order (r = 2, 3, 4, 6 or 1/2, 1/3, 1/4, 1/6).
        r = ablation_ratio(spec)
        order = int(float(r) * 1000) if r is not None and r > 1 else int(1000 / float(r)) if r else order
    elif table:
        order = _table_order(table).get(variant, order)
    label = ""
    try:
        rows = list(get_variant(variant).rows)
    except KeyError:  # unknown to the registry: the run's tag still labels it
        rows = []
    chosen = next((r for r in rows if table and r.table == table), rows[0] if rows else None)
    if chosen is not None:
        label = chosen.label
    if not label:
        label = tag_label or (f"CLIP4Clip-{temporal}" if is_base else variant)
    if is_base:
        order = min(order, -1)  # the baseline leads its group, as in the paper
    return RowInfo(label=label, temporal=temporal, order=order, is_baseline=is_base)


@lru_cache(maxsize=64)
def _table_order(table: str) -> dict[str, int]:
    try:
        return {name: i for i, name in enumerate(table_variants(table))}
    except KeyError:  # an unknown table name: keep the registry order
        return {}


def ablation_ratio(spec: Any) -> Any | None:
    """The ratio an ablation varies: the aggregation ratio if there is one, else the excitation's."""
    if spec is None:
        return None
    return spec.aggregation if spec.aggregation is not None else spec.excitation


def ratio_family(spec: Any) -> str:
    """A variant name with its ratios blanked: variants of one ratio curve share it."""
    e = (
        "none"
        if spec.excitation is None
        else (
            "r"
            if spec.aggregation is None or spec.excitation == spec.aggregation
            else ("sq" if spec.excitation > 1 else "ex")
        )
    )
    a = "none" if spec.aggregation is None else "r"
    pos = spec.excitation_pos if spec.excitation is not None else ""
    return f"{spec.temporal}|E:{e}{pos}|A:{a}|{'masked' if spec.masked else ''}"


def temporal_rank(temporal: str) -> int:
    return TEMPORAL_ORDER.index(temporal) if temporal in TEMPORAL_ORDER else len(TEMPORAL_ORDER)
