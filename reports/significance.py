"""How sure a table is: per-row tests against the baseline, significance-aware best marks, and the
smallest difference the test set can detect.

:func:`table_significance` takes the aggregated rows of one table (:func:`reports.tables.aggregate_runs`)
and the runs' per-query ranks, and returns what :mod:`reports.tables` adds to the table:

- per row: Delta T2V R@1 to the baseline of its temporal type with a 95 % interval, the test's p-value
  and the Holm-adjusted p over every row of the table compared with its baseline (``significant``
  when the adjusted p <= 0.05);
- per metric column: "best" / "second" marks that never single out rows statistically tied with the
  best (the best row and every row not significantly worse than it share the bold; the same
  again for the underline among the rest; no marks when every row ties);
- the smallest Delta R@1 the test set can detect at 80 % power (:func:`reports.stats.min_detectable_delta`).

Rows without ranks (runs from before ``ranks.npz`` was logged) keep their numbers with "n/a"
intervals, and the marks fall back to the displayed values; the notes say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports.ranks import Arm, RunRanks, arm_of
from reports.stats import (
    ALPHA,
    N_RESAMPLES,
    POWER,
    compare_success,
    holm,
    mcnemar_counts,
    mcnemar_exact,
    min_detectable_delta,
    paired_rank_test,
    seed_permutation_test,
)

__all__ = ["MARK_RESAMPLES", "SIG_MARK", "TableSignificance", "tiered_marks", "table_significance"]

SIG_MARK = "†"
MARK_RESAMPLES = 1999  # permutation tests behind the marks: p resolution 5e-4, enough for Holm at 0.05
STAT_COLUMNS = ("delta_base_lo", "delta_base_hi", "p_base", "p_holm", "significant", "test_base")


@dataclass
class TableSignificance:
    rows: pd.DataFrame                 # STAT_COLUMNS, indexed like the table's measured rows
    marks: pd.DataFrame | None         # "best"/"second"/"" per metric column; None: no ranks for every row
    notes: list[str] = field(default_factory=list)
    mde: float = float("nan")          # smallest detectable Delta R@1, percent points
    queries: int | None = None


def tiered_marks(
    values: pd.Series, higher: bool, decimals: int, pvalue: Callable[[int, int], float]
) -> tuple[pd.Series, bool]:
    """ "best" / "second" / "" per row; True when every row ties with the best (no marks at all).

    Tier by tier: the reference is the first row with the best displayed value; every other
    remaining row is compared with it (``pvalue(ref, row)``), Holm over those comparisons; the
    reference, rows displayed equal to it and rows not significantly different share the tier.
    """
    vals = values.astype(float).dropna()
    marks = pd.Series("", index=values.index, dtype=object)
    remaining = list(vals.index)
    for tier in ("best", "second"):
        if not remaining:
            break
        shown = vals[remaining].round(decimals)
        top = shown.max() if higher else shown.min()
        ref = next(i for i in remaining if shown[i] == top)
        others = [i for i in remaining if shown[i] != top]
        adj = holm([pvalue(ref, j) for j in others]) if others else np.array([])
        tied = [i for i in remaining if shown[i] == top] + [j for j, p in zip(others, adj) if not p <= ALPHA]
        if tier == "best" and len(tied) == len(vals) and len(vals) > 1:
            return marks, True
        for i in tied:
            marks[i] = tier
        remaining = [i for i in remaining if i not in tied]
    return marks, False


def _success_p(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape[0] == 1 and b.shape[0] == 1:
        return mcnemar_exact(*mcnemar_counts(a[0] > 0.5, b[0] > 0.5))
    return seed_permutation_test(a, b, n_resamples=MARK_RESAMPLES)


def _column_pvalue(arms: Mapping[int, Arm], d: str, m: str) -> Callable[[int, int], float]:
    cache: dict[tuple[int, int], float] = {}

    def p(i: int, j: int) -> float:
        if (i, j) not in cache:
            if m.startswith("R"):
                k = int(m[1:])
                cache[(i, j)] = _success_p(arms[i].success(d, k), arms[j].success(d, k))
            else:  # MdR, MnR: where the ground truth lands, as a paired rank test
                cache[(i, j)] = paired_rank_test(arms[i].ranks(d), arms[j].ranks(d))
        return cache[(i, j)]

    return p


def table_significance(
    agg: pd.DataFrame,
    columns: list[tuple[str, str]],
    ranks: Mapping[str, RunRanks] | None,
    *,
    higher: Mapping[str, bool],
    decimals: int,
    n_resamples: int = N_RESAMPLES,
) -> TableSignificance:
    """Tests, intervals, marks and power for one table (``agg``: measured rows with ``run_ids``,
    ``group``, ``is_baseline``, ``t2v/R1`` and optionally ``n_queries``)."""
    ranks = ranks or {}
    arms: dict[int, Arm] = {}
    for i, ids in agg["run_ids"].items():
        arm = arm_of(str(ids).split(","), ranks)
        if arm is not None:
            arms[i] = arm
    notes: list[str] = []
    if arms:  # one test set per table: rows scored on another cannot be paired with the rest
        ref = next(iter(arms.values()))
        other = [i for i, a in arms.items() if (a.query_ids, a.video_ids) != (ref.query_ids, ref.video_ids)]
        for i in other:
            del arms[i]
        if other:
            notes.append(f"{len(other)} row(s) were scored on a different test set than the others: no tests for them.")
    stats = pd.DataFrame(index=agg.index, columns=list(STAT_COLUMNS), dtype=object)
    stats["significant"] = False

    base = {r.group: i for i, r in agg.iterrows() if r.is_baseline}
    comps: dict[int, object] = {}
    for i, r in agg.iterrows():
        b = base.get(r.group)
        if r.is_baseline or b is None or i not in arms or b not in arms:
            continue
        c = compare_success(arms[b].success("t2v", 1), arms[i].success("t2v", 1), n_resamples=n_resamples)
        comps[i] = c
        stats.loc[i, ["delta_base_lo", "delta_base_hi", "p_base", "test_base"]] = [
            100 * c.ci95[0], 100 * c.ci95[1], c.p_value, c.test]
    if comps:
        idx = list(comps)
        adj = holm([comps[i].p_value for i in idx])  # type: ignore[attr-defined]
        for i, p in zip(idx, adj):
            stats.loc[i, "p_holm"] = float(p)
            stats.loc[i, "significant"] = bool(p <= ALPHA)
    has_delta = [i for i, r in agg.iterrows() if not r.is_baseline and r.group in base]
    seeded = any(a.seeds > 1 for a in arms.values())
    if comps:
        notes.append(_delta_note(len(comps), seeded, n_resamples))
    if len(comps) < len(has_delta):
        notes.append(
            "n/a: the row or its baseline has no per-query ranks (runs logged before ranks.npz was; "
            "`eabench eval --run RUN_ID` re-scores a run and logs them), so no interval or test."
        )

    measured = list(agg.index)
    marks = None
    if len(arms) == len(measured) and len(measured) > 1:
        marks = pd.DataFrame("", index=agg.index, columns=[f"{d}/{m}" for d, m in columns])
        tied_cols = []
        for d, m in columns:
            col, all_tied = tiered_marks(agg[f"{d}/{m}"], higher[m], decimals, _column_pvalue(arms, d, m))
            marks[f"{d}/{m}"] = col
            if all_tied:
                tied_cols.append(f"{d.upper()} {m}")
        notes.append(
            "Bold: the best value and every row not significantly worse than it; underlined: the same "
            "for the best of the remaining rows (R@K: exact McNemar on per-query success at K, or the "
            "seed-aware permutation test; MdR/MnR: Wilcoxon signed-rank on per-query ranks; Holm over the "
            "rows compared with the best, alpha = 0.05)."
            + (f" No marks where no row differs significantly from the best: {', '.join(tied_cols)}." if tied_cols
               else "")
        )
    elif len(measured) > 1:
        notes.append("Bold/underline rank the displayed values only: not every row has per-query ranks to test.")

    queries = next(iter(arms.values())).t2v.shape[1] if arms else _n_queries(agg)
    disc = [c.discordance for c in comps.values()]  # type: ignore[attr-defined]
    mde, how = float("nan"), ""
    if queries:
        if disc and np.mean(disc) > 0:
            psi = float(np.mean(disc))
            mde, how = 100 * min_detectable_delta(queries, discordance=psi), (
                f"paired (McNemar), at the discordance rate observed between the rows and their baselines, "
                f"psi = {psi:.3f}; Connor 1987: delta = sqrt(psi) (z_0.975 sqrt(N) + z_0.8 sqrt(N + z_0.8^2 "
                f"- z_0.975^2)) / (N + z_0.8^2)")
            if mde / 100 > psi + 1e-12:  # a difference cannot exceed the discordance
                how += ("; the observed psi is below that delta, so the bound where every discordant query "
                        "goes one way (psi = delta)")
        else:
            rates = agg.loc[agg["is_baseline"], "t2v/R1"].astype(float).dropna()
            where = "the baseline's R@1"
            if rates.empty:
                rates, where = agg["t2v/R1"].astype(float).dropna(), "the rows' mean R@1"
            if not rates.empty:
                p = float(rates.mean()) / 100
                mde, how = 100 * min_detectable_delta(queries, baseline_rate=p), (
                    f"unpaired two-proportion approximation at {where} p = {p:.3f} (no paired runs to estimate "
                    f"the discordance): delta = (z_0.975 + z_0.8) sqrt(2 p (1 - p) / N)")
    if np.isfinite(mde):
        notes.append(
            f"Power: with N = {queries} test queries the smallest Δ T2V R@1 this table can detect at "
            f"{POWER:.0%} power (alpha = {ALPHA}, two-sided) is about {mde:.1f} points ({how})."
        )
    return TableSignificance(stats, marks, notes, mde, queries)


def _delta_note(n_tests: int, seeded: bool, n_resamples: int) -> str:
    seeds = (
        " Rows with several seeds: per-query success averaged over seeds, a paired permutation test "
        "(scipy.stats.permutation_test) and a two-level bootstrap interval resampling seeds and queries."
        if seeded else ""
    )
    return (
        f"95 % CI: paired percentile bootstrap of Δ base over the test queries ({n_resamples} resamples); "
        f"p (Holm): exact McNemar test on per-query T2V R@1 success, Holm-adjusted over the {n_tests} "
        f"comparison(s) with a baseline in this table; {SIG_MARK} = significant at alpha = {ALPHA} after "
        f"the correction.{seeds}"
    )


def _n_queries(agg: pd.DataFrame) -> int | None:
    if "n_queries" not in agg:
        return None
    vals = pd.to_numeric(agg["n_queries"], errors="coerce").dropna()
    return int(vals.iloc[0]) if not vals.empty else None
