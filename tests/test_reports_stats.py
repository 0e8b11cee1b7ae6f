"""reports.stats against hand computations and independent formulas.

- McNemar: n01 = 2, n10 = 8 -> p = 2 * P(X <= 2 | Binomial(10, 1/2)) = 2 (1 + 10 + 45) / 1024 = 0.109375.
- Paired bootstrap: a = 0, b = 1 on 100 of 400 queries; a resample of 400 queries with replacement
  holds Binomial(400, 1/4) successes, so the percentile interval is the Binomial's 2.5 % / 97.5 %
  quantiles / 400 (up to Monte-Carlo error).
- Two-level bootstrap: arm a has a seed with every query wrong and one with every query right, arm b
  is always right; drawing two of a's seeds gives a mean of 0, 1/2 or 1 with probability 1/4, 1/2,
  1/4, so the difference is 1, 1/2 or 0 and its 95 % interval is [0, 1].
- Permutation: per-query differences (1, 1, 1) -> of the 2^3 sign flips only one reaches a mean of 1:
  p = 2 * 1/8 = 0.25; (1, 1, 1, -1) -> 5 of 16 flips reach a mean >= 1/2: p = 2 * 5/16 = 0.625.
- Holm on (0.01, 0.04, 0.03, 0.005): sorted 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06,
  0.04 * 1 = 0.04 -> running max 0.06 -> (0.03, 0.06, 0.06, 0.02).
- MDE, paired: N = 1000, psi = 0.2, z = 1.959964 / 0.841621:
  sqrt(.2) (1.959964 * 31.6228 + 0.841621 * sqrt(1000 + 0.708326 - 3.841459)) / 1000.708326
  = 0.447214 * (61.9795 + 26.5726) / 1000.708326 = 0.039573; unpaired at p = 0.4:
  2.801585 * sqrt(2 * 0.4 * 0.6 / 1000) = 0.061380.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from reports.stats import (
    compare_success,
    holm,
    mcnemar_counts,
    mcnemar_exact,
    mean_std,
    min_detectable_delta,
    paired_bootstrap_ci,
    paired_rank_test,
    seed_permutation_test,
    two_level_bootstrap_ci,
)


def test_mcnemar_exact_by_hand() -> None:
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(8, 2) == pytest.approx(0.109375)  # two-sided: symmetric
    assert mcnemar_exact(0, 0) == 1.0
    # 0 vs 5 discordant: 2 * (1/2)^5
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # a 2x2 table planted in per-query successes: 30 both right, 2 only b, 8 only a, 60 both wrong
    a = np.array([1] * 30 + [0] * 2 + [1] * 8 + [0] * 60, dtype=bool)
    b = np.array([1] * 30 + [1] * 2 + [0] * 8 + [0] * 60, dtype=bool)
    assert mcnemar_counts(a, b) == (2, 8)
    c = compare_success(a, b, n_resamples=999)
    assert c.test == "mcnemar-exact" and c.p_value == pytest.approx(0.109375)
    assert c.a == pytest.approx(0.38) and c.b == pytest.approx(0.32) and c.delta == pytest.approx(-0.06)
    assert c.discordance == pytest.approx(0.10) and c.queries == 100


def test_paired_bootstrap_matches_binomial_quantiles() -> None:
    n, k = 400, 100
    a = np.zeros(n)
    b = np.r_[np.ones(k), np.zeros(n - k)]
    lo, hi = paired_bootstrap_ci(a, b, n_resamples=9999, seed=1)
    assert lo == pytest.approx(binom.ppf(0.025, n, k / n) / n, abs=0.006)
    assert hi == pytest.approx(binom.ppf(0.975, n, k / n) / n, abs=0.006)
    # no discordant query: a degenerate interval at 0, not NaN
    same = np.r_[np.ones(10), np.zeros(10)]
    assert paired_bootstrap_ci(same, same) == (0.0, 0.0)
    # seeded: the same call gives the same interval
    assert paired_bootstrap_ci(a, b, n_resamples=999, seed=3) == paired_bootstrap_ci(a, b, n_resamples=999, seed=3)


def test_two_level_bootstrap_resamples_seeds() -> None:
    a = np.stack([np.zeros(20), np.ones(20)])  # seed 0 all wrong, seed 1 all right
    b = np.ones((1, 20))
    lo, hi = two_level_bootstrap_ci(a, b, n_resamples=4000, seed=0)
    assert (lo, hi) == (0.0, 1.0)
    # with a single seed per arm it reduces to the paired query bootstrap of a constant difference
    assert two_level_bootstrap_ci(np.zeros((1, 20)), np.ones((1, 20)), n_resamples=500) == (1.0, 1.0)


def test_permutation_test_exhaustive() -> None:
    assert seed_permutation_test(np.zeros((2, 3)), np.ones((1, 3))) == pytest.approx(0.25)
    a = np.array([[0, 0, 0, 1]])
    b = np.array([[1, 1, 1, 0], [1, 1, 1, 0]])
    assert seed_permutation_test(a, b) == pytest.approx(0.625)
    assert seed_permutation_test(a, a) == 1.0
    c = compare_success(a, b, n_resamples=999)
    assert c.test == "permutation-seeds" and c.seeds == (1, 2) and c.p_value == pytest.approx(0.625)
    assert c.delta == pytest.approx(0.75 - 0.25)


def test_holm_by_hand() -> None:
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adj <= 0.05) == [True, False, False, True]
    # NaN is outside the family: m = 2 here
    adj = holm([0.02, float("nan"), 0.04])
    assert adj[0] == pytest.approx(0.04) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_min_detectable_delta_by_hand() -> None:
    d = min_detectable_delta(1000, discordance=0.2)
    assert d == pytest.approx(0.039573, abs=2e-6)
    # Connor's forward formula at this d needs exactly N = 1000 queries
    za, zb = norm.ppf(0.975), norm.ppf(0.8)
    n_needed = (za * math.sqrt(0.2) + zb * math.sqrt(0.2 - d**2)) ** 2 / d**2
    assert n_needed == pytest.approx(1000, rel=1e-9)
    assert min_detectable_delta(1000, baseline_rate=0.4) == pytest.approx(0.061380, abs=2e-6)
    # N = 16, psi = .02: c = (1.959964 * 4 + 0.841621 * sqrt(16 + 0.708326 - 3.841459)) / 16.708326
    # = (7.839856 + 0.841621 * 3.587042) / 16.708326 = 0.649903; d = c sqrt(.02) = 0.0919 would exceed
    # psi, so the discordance must be d itself: d = c^2 = 0.422373
    assert min_detectable_delta(16, discordance=0.02) == pytest.approx(0.422373, abs=2e-6)
    # the paired design wins when runs disagree on few queries
    assert min_detectable_delta(1000, discordance=0.05) < min_detectable_delta(1000, baseline_rate=0.4)
    assert math.isnan(min_detectable_delta(1000))


def test_rank_test_and_mean_std() -> None:
    a = np.array([[1, 2, 3, 4, 5, 6]])
    assert paired_rank_test(a, a) == 1.0
    # six queries all better by 1..6 ranks: exact two-sided Wilcoxon p = 2 / 2^6
    assert paired_rank_test(a + np.arange(1, 7), a) == pytest.approx(2 / 64)
    m, s = mean_std([40.0, 42.0])
    assert m == 41.0 and s == pytest.approx(math.sqrt(2))
    assert math.isnan(mean_std([3.0])[1])
