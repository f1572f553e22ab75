"""study.stats: every statistic against scipy.stats on the same numbers."""
import numpy as np
import pytest
from scipy import stats as ss

from boostmis_jax.study import stats

SAMPLES = [
    [0.031, -0.012, 0.054, 0.020, 0.007, -0.003, 0.041, 0.015],          # no ties: exact Wilcoxon
    [0.05, 0.02, -0.01, 0.03, 0.04, 0.06, -0.02, 0.01, 0.07, 0.08, 0.09, -0.03],
    [0.02, 0.02, -0.01, 0.03, 0.02, -0.03, 0.05, 0.01],                  # ties: normal approximation
    [0.0, 0.02, 0.01, -0.03, 0.04, 0.05, 0.0, 0.06],                     # zeros dropped (+ ties after)
    list(np.random.default_rng(3).normal(0.01, 0.05, 60)),               # n > 50: normal approximation
]


@pytest.mark.parametrize("d", SAMPLES)
def test_wilcoxon_matches_scipy(d):
    nz = [x for x in d if x != 0]
    want = ss.wilcoxon(nz).pvalue          # scipy's defaults (zero_method='wilcox', method='auto')
    assert stats.wilcoxon_p(d) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("d", SAMPLES)
def test_sign_test_matches_binomtest(d):
    d = np.asarray(d)
    w, n = int((d > 0).sum()), int((d != 0).sum())
    assert stats.sign_p(d) == pytest.approx(ss.binomtest(w, n, 0.5).pvalue, rel=1e-12)


@pytest.mark.parametrize("d", SAMPLES)
def test_paired_t_interval_matches_scipy(d):
    d = np.asarray(d, float)
    lo, hi = ss.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=ss.sem(d))
    assert stats.t_ci(d) == pytest.approx([lo, hi], rel=1e-10)
    a, b = d + 0.5, np.full_like(d, 0.5)                      # a paired t on (a, b) gives the same p
    assert ss.ttest_rel(a, b).pvalue == pytest.approx(ss.ttest_1samp(d, 0.0).pvalue)


def test_bootstrap_is_seeded_and_agrees_with_scipys_percentile_bootstrap():
    d = np.asarray(SAMPLES[1])
    ci = stats.bootstrap_ci(d)
    assert ci == stats.bootstrap_ci(list(d))                     # same numbers, same interval
    ref = ss.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile",
                       rng=np.random.default_rng(1)).confidence_interval
    assert ci[0] == pytest.approx(ref.low, abs=0.003) and ci[1] == pytest.approx(ref.high, abs=0.003)
    assert ci[0] < d.mean() < ci[1]
    assert stats.bootstrap_ci([0.1]) is None


def test_holm_step_down_by_hand():
    p = [0.01, 0.04, None, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 (m = 4): 0.04, 0.09, max(0.09, 0.08) = 0.09, max(0.09, 0.2) = 0.2
    assert stats.holm(p) == pytest.approx([0.04, 0.09, None, 0.09, 0.2])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]


def test_paired_comparison_pairs_seeds_and_counts_wins():
    a = {0: 0.8, 1: 0.9, 2: 0.7, 3: 0.99, 4: None}
    b = {0: 0.85, 1: 0.80, 2: 0.75, 5: 0.5}
    c = stats.paired_comparison(a, b)
    assert c["n"] == 3 and c["seeds"] == [0, 1, 2]
    assert c["delta"] == pytest.approx(np.mean([-0.05, 0.10, -0.05]))
    assert (c["wins"], c["losses"], c["ties"]) == (1, 2, 0)
    assert c["wilcoxon_p"] == pytest.approx(ss.wilcoxon([-0.05, 0.10, -0.05]).pvalue)
    assert {"delta", "ci95", "t_ci95", "wilcoxon_p", "sign_p", "n"} <= set(c)
    empty = stats.paired_comparison({0: 1.0}, {1: 1.0})
    assert empty["n"] == 0 and empty["delta"] is None and empty["wilcoxon_p"] is None


def test_aubc_is_the_normalised_trapezoid():
    xs, ys = [12, 18, 30], [0.5, 0.7, 0.9]
    assert stats.aubc(xs, ys) == pytest.approx(np.trapezoid(ys, xs) / 18)
    assert stats.aubc([30, 12, 18], [0.9, 0.5, 0.7]) == stats.aubc(xs, ys)      # order of points
    assert stats.aubc([10], [0.6]) == 0.6 and stats.aubc([1, 2], [0.5, None]) is None
    assert 0 <= stats.aubc([0, 5, 100], [0, 1, 1]) <= 1
