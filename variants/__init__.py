"""EA-CLIP4Clip variants: excitation/aggregation blocks, temporal modules, heads and registry.

Pure torch; imports nothing of the harness and does no I/O.
"""
from __future__ import annotations

from variants.blocks import AggregationBlock, ExcitationBlock, block_params, hidden_width
from variants.heads import (
    LOGIT_SCALE_MAX,
    RetrievalHead,
    build_head,
    head_params,
    l2n,
    masked_mean,
    symmetric_infonce,
)
from variants.registry import (
    VariantEntry,
    get_variant,
    list_tables,
    list_variants,
    register_variant,
    row_for,
    table_variants,
)
from variants.rows import PaperRow
from variants.spec import VariantSpec, block_kind, format_ratio, parse_ratio, parse_variant_name
from variants.temporal import TextTowerInit

__all__ = [
    "LOGIT_SCALE_MAX",
    "AggregationBlock",
    "ExcitationBlock",
    "PaperRow",
    "RetrievalHead",
    "TextTowerInit",
    "VariantEntry",
    "VariantSpec",
    "block_kind",
    "block_params",
    "build_head",
    "format_ratio",
    "get_variant",
    "head_params",
    "hidden_width",
    "l2n",
    "list_tables",
    "list_variants",
    "masked_mean",
    "parse_ratio",
    "parse_variant_name",
    "register_variant",
    "row_for",
    "symmetric_infonce",
    "table_variants",
]
