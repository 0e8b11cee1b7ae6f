"""How sure a difference is: paired tests, intervals, multiplicity and power for retrieval results.

Pure functions on per-query arrays (numpy/scipy, no MLflow). The unit of a test is the test
query: each run gives every query a 1-based rank (``ranks.npz``), and R@K is the mean of the
per-query successes ``rank <= K``. Two runs scored on the same test set are *paired*: the same
queries, so the right tests look at the queries on which they disagree.

- one seed per arm: the exact McNemar test on the discordant queries (:func:`mcnemar_exact`) and a
  paired bootstrap interval of the difference (:func:`paired_bootstrap_ci`);
- several seeds: per-query success averaged over each arm's seeds, a paired permutation test on
  those per-query mean differences (:func:`seed_permutation_test`) and a two-level bootstrap that
  resamples seeds and queries (:func:`two_level_bootstrap_ci`);
- :func:`holm` corrects the p-values of the rows of one table compared with their baseline;
- :func:`min_detectable_delta` is the smallest difference a test set of N queries can detect.

Proportions here are in [0, 1]; callers scale them to the percent the tables print.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "N_RESAMPLES",
    "POWER",
    "SEED",
    "Comparison",
    "compare_success",
    "holm",
    "mcnemar_counts",
    "mcnemar_exact",
    "mean_std",
    "min_detectable_delta",
    "paired_bootstrap_ci",
    "paired_rank_test",
    "seed_permutation_test",
    "two_level_bootstrap_ci",
]

ALPHA = 0.05
POWER = 0.80
CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 20240603  # fixed: the same runs give the same intervals in every report


# ------------------------------------------------------------------ one seed per arm
def mcnemar_counts(a: ArrayLike, b: ArrayLike) -> tuple[int, int]:
    """``(n01, n10)``: queries that only ``b`` gets right, and queries that only ``a`` gets right."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in shape: {x.shape} vs {y.shape}")
    return int((~x & y).sum()), int((x & ~y).sum())


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value: ``binomtest(n10, n01 + n10, 0.5)``.

    Under the null both kinds of discordant query are equally likely, so ``n10`` is
    Binomial(n01 + n10, 1/2). Concordant queries carry no information. No discordant query: p = 1.
    """
    n = int(n01) + int(n10)
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(n10), n, 0.5).pvalue)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y - x, axis=axis)


def paired_bootstrap_ci(
    a: ArrayLike, b: ArrayLike, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b - a)`` over paired queries (``scipy.stats.bootstrap``,
    ``paired=True``: queries are resampled with their pair).

    Percentile, not BCa: the per-query differences take only the values -1, 0, 1, and for two close
    variants they are all 0 on most resamples; BCa's jackknife acceleration is then undefined (NaN
    intervals) while the percentile interval is always defined, and with hundreds of queries the
    bootstrap distribution of a mean is close to symmetric, where BCa would change little.
    Fewer than two queries: (nan, nan).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in shape: {x.shape} vs {y.shape}")
    if x.size < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap(
        (x, y), _mean_diff, paired=True, vectorized=True, method="percentile",
        confidence_level=confidence, n_resamples=n_resamples, batch=min(n_resamples, max(1, 2_000_000 // x.size)),
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# ------------------------------------------------------------------ several seeds per arm
def _per_query_means(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"arms must be [seeds, queries] over the same queries: {x.shape} vs {y.shape}")
    return x, y


def seed_permutation_test(
    a: ArrayLike, b: ArrayLike, *, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> float:
    """Two-sided paired permutation test of per-query success averaged over each arm's seeds.

    ``a``, ``b``: [seeds, queries] (0/1 successes, or any per-query score). The statistic is the mean
    over queries of ``mean_seeds(b) - mean_seeds(a)``; under the null the two arms' labels are
    exchangeable within each query (``permutation_type='samples'``). With 2**N <= n_resamples the
    null distribution is enumerated exactly.
    """
    x, y = _per_query_means(a, b)
    xm, ym = x.mean(0), y.mean(0)
    if np.allclose(xm, ym):
        return 1.0
    res = stats.permutation_test(
        (xm, ym), _mean_diff, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
        batch=min(n_resamples, max(1, 2_000_000 // xm.size)), rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def two_level_bootstrap_ci(
    a: ArrayLike, b: ArrayLike, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile interval of the seed-averaged difference, resampling seeds *and* queries.

    Each resample draws, with replacement, ``S_a`` of arm a's seeds, ``S_b`` of arm b's seeds and N
    queries (the same queries for both arms: they stay paired), and computes the mean over the drawn
    queries of (mean over the drawn b seeds - mean over the drawn a seeds). Seed-to-seed variation
    thus widens the interval, which a queries-only bootstrap of the seed means would hide. A single
    seed in an arm contributes no seed variation. Written with numpy (scipy's bootstrap resamples
    one level only); batched so memory stays ~ 8 * 1000 * N bytes.
    """
    x, y = _per_query_means(a, b)
    n = x.shape[1]
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    batch = max(1, min(n_resamples, 1_000_000 // n))
    for lo in range(0, n_resamples, batch):
        m = min(batch, n_resamples - lo)
        # Seed multiplicities per resample: (m, S) counts; their product with the arm is the mean
        # over the drawn seeds for every query at once.
        ca = np.stack([np.bincount(r, minlength=x.shape[0]) for r in rng.integers(x.shape[0], size=(m, x.shape[0]))])
        cb = np.stack([np.bincount(r, minlength=y.shape[0]) for r in rng.integers(y.shape[0], size=(m, y.shape[0]))])
        diff = (cb @ y) / y.shape[0] - (ca @ x) / x.shape[0]  # (m, N)
        q = rng.integers(n, size=(m, n))
        out[lo : lo + m] = np.take_along_axis(diff, q, axis=1).mean(1)
    tail = (1 - confidence) / 2 * 100
    lo_, hi_ = np.percentile(out, [tail, 100 - tail])
    return float(lo_), float(hi_)


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for one value) of a row's seeds."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


# ------------------------------------------------------------------ one comparison, either design
@dataclass(frozen=True)
class Comparison:
    """Arm b against arm a on the same queries (proportions in [0, 1])."""

    a: float                     # arm a's success rate (mean over seeds)
    b: float
    delta: float                 # b - a
    ci95: tuple[float, float]    # interval of b - a
    p_value: float
    test: str                    # "mcnemar-exact" or "permutation-seeds"
    queries: int
    seeds: tuple[int, int]
    discordance: float           # share of queries on which the (first seeds of the) arms disagree


def compare_success(
    a: ArrayLike, b: ArrayLike, *, n_resamples: int = N_RESAMPLES, seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Paired comparison of per-query successes ``a``, ``b`` ([queries] or [seeds, queries]).

    One seed per arm: exact McNemar + paired percentile bootstrap. More seeds in either arm: the
    seed-aware permutation test + two-level bootstrap on per-query success averaged over seeds.
    """
    x, y = _per_query_means(a, b)
    n01, n10 = mcnemar_counts(x[0] > 0.5, y[0] > 0.5)
    disc = (n01 + n10) / x.shape[1] if x.shape[1] else float("nan")
    if x.shape[0] == 1 and y.shape[0] == 1:
        p = mcnemar_exact(n01, n10)
        ci = paired_bootstrap_ci(x[0], y[0], confidence=confidence, n_resamples=n_resamples, seed=seed)
        test = "mcnemar-exact"
    else:
        p = seed_permutation_test(x, y, n_resamples=n_resamples, seed=seed)
        ci = two_level_bootstrap_ci(x, y, confidence=confidence, n_resamples=n_resamples, seed=seed)
        test = "permutation-seeds"
    am, bm = float(x.mean()), float(y.mean())
    return Comparison(am, bm, bm - am, ci, p, test, int(x.shape[1]), (x.shape[0], y.shape[0]), disc)


def paired_rank_test(a_ranks: ArrayLike, b_ranks: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value of per-query rank differences (ranks averaged over each
    arm's seeds): the test behind the MdR/MnR columns' marks. Zero differences are dropped
    (``zero_method='wilcox'``); no non-zero difference: p = 1."""
    x, y = _per_query_means(a_ranks, b_ranks)
    d = y.mean(0) - x.mean(0)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


# ------------------------------------------------------------------ multiplicity and power
def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are not part of the family and stay NaN).

    Sort the m p-values ascending; the i-th smallest (1-based) gets ``(m - i + 1) * p_(i)``, made
    monotone by a running maximum and capped at 1. A hypothesis is rejected at level alpha when its
    adjusted p-value is <= alpha; this controls the family-wise error rate without assuming
    independence (Holm 1979). Not in scipy (``false_discovery_control`` is BH/BY).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def min_detectable_delta(
    n: int, *, discordance: float | None = None, baseline_rate: float | None = None,
    alpha: float = ALPHA, power: float = POWER,
) -> float:
    """Smallest difference in success rate (a proportion) a test set of ``n`` queries detects with
    probability ``power`` in a two-sided test at level ``alpha``.

    Paired design (``discordance`` = psi, the share of queries on which two runs disagree):
    Connor (1987)'s sample size for McNemar's test,
    ``n = (z_{1-a/2} sqrt(psi) + z_{1-b} sqrt(psi - d^2))^2 / d^2``, solved for d:
    ``d = sqrt(psi) (z_{1-a/2} sqrt(n) + z_{1-b} sqrt(n + z_{1-b}^2 - z_{1-a/2}^2)) / (n + z_{1-b}^2)``.
    A difference never exceeds the discordance (|p10 - p01| <= psi), so when the observed psi is
    below the d it would need (psi < c^2, with d = c sqrt(psi)), the smallest detectable difference
    is the one whose discordant queries all go one way (psi = d): ``d = c^2``.
    Unpaired fallback (no pairs observed; ``baseline_rate`` = p): the two-proportion normal
    approximation with both arms' variance at p, ``d = (z_{1-a/2} + z_{1-b}) sqrt(2 p (1 - p) / n)``.
    NaN when neither rate is known or ``n`` < 1.
    """
    if n is None or not n >= 1:
        return float("nan")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    if discordance is not None and np.isfinite(discordance) and discordance > 0:
        c = (za * math.sqrt(n) + zb * math.sqrt(max(n + zb**2 - za**2, 0.0))) / (n + zb**2)
        return float(min(1.0, c * max(math.sqrt(float(discordance)), c)))
    if baseline_rate is not None and np.isfinite(baseline_rate) and 0 < baseline_rate < 1:
        p = float(baseline_rate)
        return float((za + zb) * math.sqrt(2 * p * (1 - p) / n))
    return float("nan")
