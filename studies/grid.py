"""The grid of a paper-table study: which variants it covers, its cells, sampler and coverage.

A cell is one ``(variant, seed)``. The grid is an Optuna ``GridSampler`` over
``{"variant": variants, "seed": seeds}`` with grid seed 0 in every worker (different seeds would
map trial numbers to different cells, STACK.md §1.4). :func:`coverage` says, per cell, which trial
counts (the first COMPLETE), which are duplicates, and what is still missing; the workers of
:mod:`studies.table` decide from it what to train next.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.samplers import GridSampler
from optuna.trial import FrozenTrial, TrialState

from harness.errors import ConfigError
from studies.workers import trial_params
from variants import list_variants, parse_variant_name, table_variants

__all__ = [
    "DEFAULT_SEEDS",
    "GRID_SEED",
    "Cell",
    "CellGridSampler",
    "Coverage",
    "cell_of",
    "count_complete_cells",
    "coverage",
    "grid_sampler",
    "select_variants",
    "table_cells",
    "trial_params",
]

GRID_SEED = 0
DEFAULT_SEEDS = (42, 43, 44, 45, 46, 47, 48, 49, 50, 51)
Cell = tuple[str, int]


def select_variants(table: str | None, spec: str | None) -> list[str]:
    """The variants of a study: ``table``'s rows, narrowed by ``spec`` (comma-separated names or
    fnmatch patterns); without a table, ``spec`` picks from the whole registry, and a valid name
    outside the registry (another ratio) is taken as it is."""
    if table is None and not spec:
        raise ConfigError("name a TABLE (`eabench study tables` lists them) or give --variants a,b,c")
    try:
        pool = table_variants(table) if table else list_variants("*")
    except KeyError as exc:
        raise ConfigError(str(exc).strip("'\"")) from None
    if not spec:
        return pool
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        hits = [v for v in pool if fnmatch.fnmatchcase(v, item)]
        if not hits and table is None and not any(c in item for c in "*?["):
            try:  # a valid name outside the registry (another ratio) is still trainable
                hits = [parse_variant_name(item).name]
            except (ValueError, KeyError):
                hits = []
        if not hits:
            where = f"table {table}" if table else "the registry"
            raise ConfigError(f"--variants {item!r} matches nothing in {where}; `eabench variants` lists names")
        out += [h for h in hits if h not in out]
    return out


class CellGridSampler(GridSampler):
    """GridSampler whose ``after_trial`` never stops the study.

    Stopping is the worker loop's decision (it knows about re-queued cells). Optuna 5.0's own
    ``after_trial`` also raises KeyError for an enqueued trial when one grid cell is left, because
    enqueued trials carry ``fixed_params`` and no ``grid_id``.
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


def grid_sampler(variants: Sequence[str], seeds: Sequence[int]) -> CellGridSampler:
    return CellGridSampler({"variant": list(variants), "seed": [int(s) for s in seeds]}, seed=GRID_SEED)


def table_cells(variants: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    return [(v, int(s)) for v in variants for s in seeds]


def cell_of(params: dict[str, Any]) -> Cell | None:
    """The cell of a trial's parameters (None for a trial that has not drawn one)."""
    if "variant" not in params or "seed" not in params:
        return None
    return (str(params["variant"]), int(params["seed"]))


@dataclass
class Coverage:
    """Per-cell outcome: the counting trial (first COMPLETE), duplicates, and what is missing."""

    cells: list[Cell]
    complete: dict[Cell, int] = field(default_factory=dict)
    duplicates: dict[Cell, list[int]] = field(default_factory=dict)
    running: dict[Cell, list[int]] = field(default_factory=dict)
    waiting: dict[Cell, list[int]] = field(default_factory=dict)
    failures: dict[Cell, int] = field(default_factory=dict)     # FAIL trials with an error
    gave_up: list[Cell] = field(default_factory=list)

    @property
    def missing(self) -> list[Cell]:
        return [c for c in self.cells if c not in self.complete]

    @property
    def done(self) -> bool:
        return all(c in self.complete or c in self.gave_up for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        def name(c: tuple[Any, ...]) -> str:
            return f"{c[0]}@{c[1]}"

        return {
            "cells": len(self.cells),
            "complete": len(self.complete),
            "missing": [name(c) for c in self.missing],
            "gave_up": [name(c) for c in self.gave_up],
            "duplicates": {name(c): ns for c, ns in self.duplicates.items()},
            "trial_of_cell": {name(c): n for c, n in self.complete.items()},
        }


def coverage(trials: Sequence[FrozenTrial], cells: Sequence[Cell], *, max_failures: int = 2) -> Coverage:
    cov = Coverage(list(cells))
    wanted = set(cells)
    for t in sorted(trials, key=lambda x: x.number):
        cell = cell_of(trial_params(t))
        if cell is None or cell not in wanted:
            continue
        if t.state == TrialState.COMPLETE:
            if cell in cov.complete:
                cov.duplicates.setdefault(cell, []).append(t.number)
            else:
                cov.complete[cell] = t.number
        elif t.state == TrialState.RUNNING:
            cov.running.setdefault(cell, []).append(t.number)
        elif t.state == TrialState.WAITING:
            cov.waiting.setdefault(cell, []).append(t.number)
        elif t.state == TrialState.FAIL and "error" in t.user_attrs:
            cov.failures[cell] = cov.failures.get(cell, 0) + 1
    cov.gave_up = [c for c in cells if c not in cov.complete and cov.failures.get(c, 0) >= max_failures]
    return cov


def count_complete_cells(trials: Sequence[FrozenTrial], cells: Sequence[Cell]) -> int:
    """How many of ``cells`` have a COMPLETE trial (the progress of a table study)."""
    done = {cell_of(trial_params(t)) for t in trials if t.state == TrialState.COMPLETE}
    return len(done & set(cells))
