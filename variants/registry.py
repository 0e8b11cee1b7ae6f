"""timm-style variant registry: one name per reproducible head, with the paper rows it fills.

The paper catalog is data (``variants.catalog.paper_rows``); the registry files it on first use,
so importing the package has no side effects.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from variants.catalog import paper_rows
from variants.rows import ALL_DATASETS, PaperRow
from variants.spec import VariantSpec, parse_variant_name

__all__ = [
    "ALL_DATASETS",
    "PaperRow",
    "VariantEntry",
    "get_variant",
    "list_tables",
    "list_variants",
    "register_variant",
    "row_for",
    "table_variants",
]


@dataclass(frozen=True)
class VariantEntry:
    """A registered variant: its spec and its paper rows (primary row first; may be empty)."""

    spec: VariantSpec
    rows: tuple[PaperRow, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> str | None:
        return self.rows[0].table if self.rows else None

    @property
    def label(self) -> str:
        return self.rows[0].label if self.rows else self.spec.name

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.table for r in self.rows))


_REGISTRY: dict[str, VariantEntry] = {}
_TABLE_ORDER: dict[str, list[str]] = {}  # table -> names in row order
_catalog_state = {"loaded": False}


def _file(entry: VariantEntry) -> VariantEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"variant {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    for table in entry.tables:
        _TABLE_ORDER.setdefault(table, []).append(entry.name)
    return entry


def _ensure_catalog() -> None:
    """File every catalog variant once, with all its rows (primary first), before anything else.

    A variant is filed when its first row comes up, but its rows in other tables may come later
    (meanP_E4_A4 is row (5) of ``meanP`` and the third row of ``ratio-meanP-EA``), so each table's
    row order is taken from the catalog afterwards.
    """
    if _catalog_state["loaded"]:
        return
    grouped: dict[VariantSpec, list[PaperRow]] = {}
    order: dict[str, list[str]] = {}
    for spec, row in paper_rows():
        grouped.setdefault(spec, []).append(row)
        order.setdefault(row.table, []).append(spec.name)
    _catalog_state["loaded"] = True
    for spec, rows in grouped.items():
        _file(VariantEntry(spec, tuple(rows)))
    for table, names in order.items():
        _TABLE_ORDER[table] = names


def register_variant(spec: VariantSpec | str, rows: Iterable[PaperRow] = ()) -> VariantEntry:
    """Register ``spec`` with its paper rows; raises ValueError if the name is taken."""
    _ensure_catalog()
    if isinstance(spec, str):
        spec = parse_variant_name(spec)
    return _file(VariantEntry(spec, tuple(rows)))


def get_variant(name: str) -> VariantEntry:
    """The entry of a registered name; KeyError lists close matches."""
    _ensure_catalog()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `eabench variants` to list them"
        raise KeyError(f"unknown variant {name!r}{hint}") from None


def _as_patterns(p: str | Sequence[str] | None) -> list[str]:
    if p is None:
        return []
    return [p] if isinstance(p, str) else list(p)


def list_variants(
    pattern: str | Sequence[str] | None = "*",
    exclude: str | Sequence[str] | None = (),
    table: str | None = None,
) -> list[str]:
    """Registered names matching any of ``pattern`` (fnmatch) and none of ``exclude``, in
    registry order; with ``table``, only that table's variants, in its row order."""
    _ensure_catalog()
    include = _as_patterns(pattern) or ["*"]
    excl = _as_patterns(exclude)
    names = list(_REGISTRY) if table is None else list(_TABLE_ORDER.get(table, []))
    out = []
    for name in names:
        if not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in excl):
            continue
        out.append(name)
    return out


def list_tables() -> list[str]:
    """Table names in order of first appearance."""
    _ensure_catalog()
    return [t for t, names in _TABLE_ORDER.items() if names]


def table_variants(table: str) -> list[str]:
    """Variant names of one table in row order (order of registration)."""
    _ensure_catalog()
    if table not in list_tables():
        close = difflib.get_close_matches(table, list_tables(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; tables: {', '.join(list_tables())}"
        raise KeyError(f"unknown table {table!r}{hint}")
    return list(_TABLE_ORDER[table])


def row_for(name: str, table: str) -> PaperRow:
    """The row of variant ``name`` in ``table``."""
    for row in get_variant(name).rows:
        if row.table == table:
            return row
    raise KeyError(f"variant {name!r} has no row in table {table!r}")
