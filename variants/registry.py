"""timm-style variant registry: one name per reproducible head, with the paper rows it fills.

The catalog of paper rows (``variants.catalog``) is registered lazily on first use, so importing
the package has no side effects.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from variants.spec import VariantSpec, parse_variant_name

ALL_DATASETS: tuple[str, ...] = ("msrvtt", "didemo", "activitynet")


@dataclass(frozen=True)
class PaperRow:
    """A row of a paper table: table name, the row label, and the datasets it was run on."""

    table: str
    label: str
    dataset_scope: tuple[str, ...] = ALL_DATASETS


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


def _ensure_catalog() -> None:
    if _catalog_state["loaded"]:
        return
    _catalog_state["loaded"] = True  # set first: the catalog itself calls register_variant
    from variants import catalog

    catalog.register_catalog()


def register_variant(spec: VariantSpec | str, rows: Iterable[PaperRow] = ()) -> VariantEntry:
    """Register ``spec`` with its paper rows; raises ValueError if the name is taken."""
    _ensure_catalog()
    if isinstance(spec, str):
        spec = parse_variant_name(spec)
    if spec.name in _REGISTRY:
        raise ValueError(f"variant {spec.name!r} is already registered")
    entry = VariantEntry(spec, tuple(rows))
    _REGISTRY[spec.name] = entry
    for table in entry.tables:
        _TABLE_ORDER.setdefault(table, []).append(spec.name)
    return entry


def set_table_order(table: str, names: Sequence[str]) -> None:
    """Fix the row order of ``table`` (the catalog registers variants before all their rows are
    known, e.g. meanP_E4_A4 is row (5) of ``meanP`` and the third row of ``ratio-meanP-EA``)."""
    current = _TABLE_ORDER.get(table, [])
    if sorted(current) != sorted(names):
        raise ValueError(f"table {table!r}: order {list(names)} does not match its variants {current}")
    _TABLE_ORDER[table] = list(names)


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
