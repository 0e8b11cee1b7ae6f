"""`eabench variants [PATTERN] [--table T] [--json] [--tables]`: list the variant registry."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from harness.console import output_console
from harness.errors import ConfigError

T_DEFAULT = 12
D_DEFAULT = 512


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "variants",
        help="list registered model variants (paper rows) with their blocks and head sizes",
        description="List registered variants. PATTERN is an fnmatch wildcard, e.g. 'seqTransf*'.",
    )
    p.add_argument("pattern", nargs="*", default=["*"], metavar="PATTERN", help="fnmatch pattern(s)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="drop matching names")
    p.add_argument("--table", metavar="T", help="only variants with a row in table T (see --tables)")
    p.add_argument("--tables", action="store_true", help="list the paper tables and their variant counts")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.set_defaults(func=run)


def _block(ratio: Any, placement: str | None = None) -> dict[str, Any]:
    from variants import block_kind, format_ratio

    if ratio is None:
        d: dict[str, Any] = {"type": None, "ratio": None}
        if placement is not None:
            d["placement"] = None
        return d
    d = {"type": block_kind(ratio), "ratio": format_ratio(ratio, "/")}
    if placement is not None:
        d["placement"] = placement
    return d


def variant_record(name: str, table: str | None = None) -> dict[str, Any]:
    """The JSON record of one registered variant (label/table from ``table``'s row if given)."""
    from variants import get_variant, head_params, row_for

    entry = get_variant(name)
    spec = entry.spec
    row = row_for(name, table) if table else (entry.rows[0] if entry.rows else None)
    # "post": after the temporal module on normalised frames; "pre": on raw CLIP features
    # before the sequential module (excitation_seq*) or before the cross encoder (tightTransf).
    placement = spec.excitation_pos if spec.excitation is not None else None
    return {
        "name": name,
        "temporal": spec.temporal,
        "paper_label": row.label if row else None,
        "table": row.table if row else None,
        "tables": list(entry.tables),
        "dataset_scope": list(row.dataset_scope) if row else [],
        "se_type": spec.se_type,
        "excitation": _block(spec.excitation, placement or "none"),
        "aggregation": _block(spec.aggregation),
        "masked": spec.masked,
        "head_params": head_params(spec, T_DEFAULT, D_DEFAULT),
    }




def run(args: argparse.Namespace) -> int:
    from variants import list_tables, list_variants, table_variants

    if args.tables:
        counts = [{"table": t, "variants": len(table_variants(t))} for t in list_tables()]
        if args.json:
            print(json.dumps(counts, indent=2))
            return 0
        from rich.table import Table

        tab = Table(title="paper tables")
        tab.add_column("table")
        tab.add_column("variants", justify="right")
        for c in counts:
            tab.add_row(c["table"], str(c["variants"]))
        output_console().print(tab)
        return 0

    if args.table is not None and args.table not in list_tables():
        raise ConfigError(
            f"--table {args.table!r} is not a paper table; choose one of: {', '.join(list_tables())}"
        )
    names = list_variants(args.pattern, exclude=args.exclude, table=args.table)
    records = [variant_record(n, args.table) for n in names]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(f"no variant matches {' '.join(args.pattern)}", file=sys.stderr)
        return 1
    from rich.table import Table

    tab = Table(title=f"{len(records)} variants (head params at T={T_DEFAULT}, D={D_DEFAULT})")
    for col, kw in (
        ("name", {"style": "bold", "no_wrap": True}), ("temporal", {}), ("paper label", {}), ("table", {}),
        ("E ratio / placement", {}), ("A ratio", {}), ("masked", {}), ("head params", {"justify": "right"}),
    ):
        tab.add_column(col, **kw)
    for r in records:
        e, a = r["excitation"], r["aggregation"]
        tab.add_row(
            r["name"], r["temporal"], r["paper_label"] or "", r["table"] or "",
            f"{e['ratio']} / {e['placement']}" if e["ratio"] else "-",
            a["ratio"] or "-", "yes" if r["masked"] else "", f"{r['head_params']:,}",
        )
    output_console().print(tab)
    return 0
