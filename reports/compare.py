"""``eabench report compare A B``: the paired comparison of two runs (or two study rows) on the same
test set, from their per-query ranks.

Each side is a run id or ``STUDY:VARIANT`` (every finished seed of that variant in the study). For
R@1, R@5 and R@10 in both directions it reports both values, the difference b - a with a 95 %
interval and a p-value: one seed per side, the exact McNemar test and a paired bootstrap; several
seeds, the seed-aware permutation test and the two-level bootstrap (:mod:`reports.stats`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.tracking import DEFAULT_EXPERIMENT
from harness.train.schema import ARTIFACT_RANKS, DIRECTIONS
from reports.ranks import EVAL_RANKS, Arm, RunRanks, check_same_test_set, load_ranks
from reports.runs import RunRecord, load_runs
from reports.stats import N_RESAMPLES, compare_success

__all__ = ["COMPARE_KS", "compare_arms", "compare_runs", "comparison_table", "resolve_side"]

COMPARE_KS: tuple[int, ...] = (1, 5, 10)


def resolve_side(client: Any, spec: str, experiment: str = DEFAULT_EXPERIMENT) -> list[RunRecord]:
    """The runs of one side: a run id, or ``STUDY:VARIANT`` (all its finished seeds)."""
    study, sep, variant = spec.rpartition(":")
    if not sep:
        return load_runs(client, run_ids=[spec], experiment=experiment, finished_only=False)
    runs = load_runs(client, study=study, experiment=experiment)
    chosen = [r for r in runs if r.variant == variant]
    if not chosen:
        known = sorted({r.variant for r in runs})
        raise ConfigError(
            f"{spec}: study {study!r} has no finished run of variant {variant!r}; its variants: "
            f"{', '.join(known) or 'none'}"
        )
    return chosen


def _side_ranks(client: Any, runs: list[RunRecord], spec: str) -> list[RunRanks]:
    out = []
    for r in runs:
        rk = load_ranks(client, r.run_id)
        if rk is None:
            raise ConfigError(
                f"{spec}: run {r.run_id} has no per-query ranks ({ARTIFACT_RANKS}; it was trained before they "
                f"were logged): `eabench eval --run {r.run_id}` re-scores its best epoch and logs {EVAL_RANKS}"
            )
        out.append(rk)
    return out


def compare_arms(a: Arm, b: Arm, *, ks: tuple[int, ...] = COMPARE_KS, n_resamples: int = N_RESAMPLES
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{direction: {"R<k>": {"a", "b", "delta", "ci95", "p_value", "test"}}}`` in percent."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for d in DIRECTIONS:
        out[d] = {}
        for k in ks:
            c = compare_success(a.success(d, k), b.success(d, k), n_resamples=n_resamples)
            out[d][f"R{k}"] = {
                "a": 100 * c.a,
                "b": 100 * c.b,
                "delta": 100 * c.delta,
                # NaN (fewer than two items to resample) is not JSON: null
                "ci95": [None if x != x else 100 * x for x in c.ci95],
                "p_value": c.p_value,
                "test": c.test,
            }
    return out


def compare_runs(
    client: Any, a: str, b: str, *, experiment: str = DEFAULT_EXPERIMENT, ks: tuple[int, ...] = COMPARE_KS,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """The paired comparison of sides ``a`` and ``b`` (run ids or ``STUDY:VARIANT``), as the JSON
    ``eabench report compare --json`` prints. Raises ConfigError when a run has no ranks or the two
    sides were scored on different test sets."""
    runs_a, runs_b = resolve_side(client, a, experiment), resolve_side(client, b, experiment)
    ra, rb = _side_ranks(client, runs_a, a), _side_ranks(client, runs_b, b)
    names = [f"{a} ({r.run_id[:8]})" for r in ra] + [f"{b} ({r.run_id[:8]})" for r in rb]
    check_same_test_set(ra + rb, names)

    def arm(rs: list[RunRanks]) -> Arm:
        return Arm(tuple(r.run_id for r in rs), np.stack([r.t2v for r in rs]), np.stack([r.v2t for r in rs]),
                   rs[0].query_ids, rs[0].video_ids)

    arm_a, arm_b = arm(ra), arm(rb)
    setup = {side: {"protocol": sorted({r.protocol for r in runs}),
                    "numerics": sorted({r.numerics or "?" for r in runs})}
             for side, runs in (("a", runs_a), ("b", runs_b))}
    return {
        "a": a,
        "b": b,
        "queries": len(arm_a.query_ids),
        "videos": len(arm_a.video_ids),
        "runs": {"a": list(arm_a.run_ids), "b": list(arm_b.run_ids)},
        "setup": setup,
        "warnings": setup_warnings(setup),
        **compare_arms(arm_a, arm_b, ks=ks, n_resamples=n_resamples),
    }


def setup_warnings(setup: dict[str, dict[str, list[str]]]) -> list[str]:
    """What makes the two sides' difference more than the variants' (another protocol or other
    numerics, docs/FIDELITY.md): said next to every comparison, never silently mixed."""
    out = []
    for key in ("protocol", "numerics"):
        for side in ("a", "b"):
            if len(setup[side][key]) > 1:
                out.append(f"side {side} mixes runs of {key} {', '.join(setup[side][key])}")
        if setup["a"][key] != setup["b"][key]:
            out.append(f"the sides differ in {key} ({'/'.join(setup['a'][key])} vs {'/'.join(setup['b'][key])}): "
                       f"the difference is not the variants' alone")
    return out


def comparison_table(res: dict[str, Any]) -> Any:
    """A Rich table of :func:`compare_runs`' result (one row per direction and R@K)."""
    from rich.markup import escape
    from rich.table import Table

    seeds = f"{len(res['runs']['a'])} vs {len(res['runs']['b'])} seed(s)"
    table = Table(title=f"{escape(res['b'])} (b) vs {escape(res['a'])} (a): {res['queries']} text queries, "
                  f"{res['videos']} videos, {seeds}")
    for col in ("direction", "metric", "a", "b", "Δ b−a", "95 % CI", "p", "test"):
        table.add_column(col, justify="left" if col in ("direction", "metric", "test") else "right")
    for d in DIRECTIONS:
        for m, c in res[d].items():
            p = c["p_value"]
            ci = "n/a" if None in c["ci95"] else f"[{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}]"
            table.add_row(d.upper(), f"R@{m[1:]}", f"{c['a']:.1f}", f"{c['b']:.1f}", f"{c['delta']:+.1f}",
                          ci, "<0.001" if p < 0.001 else f"{p:.3f}", c["test"])
    table.caption = ("R@K in percent; T2V over text queries, V2T over videos. p: exact McNemar (one seed per "
                     "side) or paired permutation test on seed-averaged per-query success; CI: paired bootstrap.")
    for warning in res.get("warnings", []):
        table.caption += f"\n[bold yellow]warning:[/] {escape(warning)}"
    return table
