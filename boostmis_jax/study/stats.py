"""Paired statistics over per-seed values: pure functions of plain floats, no run records.

Every comparison in a study pairs two arms on the seeds both ran (the same seed = the same initial labeled
set, data cut and initialisation), so the unit of analysis is the per-seed difference d_i = a_i - b_i:

- `delta`: the mean of d;
- `ci95`: a percentile bootstrap of the mean of d (10,000 resamples of the seeds, seeded, so a rerun prints
  the same interval); `t_ci95`: the paired t interval mean +- t(0.975, n-1) sd / sqrt(n);
- `wilcoxon_p`: two-sided Wilcoxon signed-rank test, zeros dropped, then scipy.stats.wilcoxon's defaults:
  the exact null for n <= 50 without ties; with ties, every sign pattern of the average ranks for n <= 13,
  else the normal approximation with the tie correction;
- `sign_p`: two-sided exact sign test on wins vs losses (ties dropped): scipy.stats.binomtest(w, w + l);
- `holm_p`: Holm's step-down adjustment of `wilcoxon_p` across the comparisons of one table.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
EXACT_PERMUTATION_MAX = 13   # Wilcoxon with ties: every sign pattern up to this n (as scipy), else normal


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], np.float64)


def bootstrap_ci(d: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean of `d` (None below two values)."""
    d = _clean(d)
    if d.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (resamples, d.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return [float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))]


def t_ci(d: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Paired t interval of the mean of `d` (None below two values)."""
    from scipy.stats import t as student_t

    d = _clean(d)
    if d.size < 2:
        return None
    half = float(student_t.ppf(0.5 + level / 2.0, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return [float(d.mean()) - half, float(d.mean()) + half]


def _exact_signed_rank_cdf(n: int) -> np.ndarray:
    """Counts of each W+ in 0..n(n+1)/2 over the 2^n sign patterns of ranks 1..n (no ties)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, np.float64)
    counts[0] = 1.0
    for k in range(1, n + 1):
        shifted = np.zeros_like(counts)
        shifted[k:] = counts[:-k]
        counts = counts + shifted
    return counts


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, np.float64)
    sa = a[order]
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon_p(d: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p of `d` against 0 (None when every difference is 0 or none exist)."""
    d = _clean(d)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return None
    r = _ranks(np.abs(d))
    w_plus = float(r[d > 0].sum())
    w_minus = float(r[d < 0].sum())
    ties = np.unique(np.abs(d), return_counts=True)[1]
    if n <= 50 and np.all(ties == 1):
        counts = _exact_signed_rank_cdf(n)
        w = int(round(min(w_plus, w_minus)))
        p = 2.0 * counts[:w + 1].sum() / counts.sum()
        return float(min(1.0, p))
    if n <= EXACT_PERMUTATION_MAX:     # ties: every one of the 2^n sign patterns of the average ranks
        signs = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
        null = signs @ r
        tol = 1e-12 * max(1.0, w_plus)
        p = 2.0 * min(np.mean(null <= w_plus + tol), np.mean(null >= w_plus - tol))
        return float(min(1.0, p))
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties ** 3 - ties).sum()) / 48.0
    if var <= 0:
        return 1.0
    z = (min(w_plus, w_minus) - mean) / math.sqrt(var)
    return float(min(1.0, math.erfc(abs(z) / math.sqrt(2.0))))


def sign_p(d: Sequence[float]) -> float | None:
    """Two-sided exact sign test: wins (d > 0) against losses (d < 0), ties dropped."""
    d = _clean(d)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    n = wins + losses
    if n == 0:
        return None
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count as a test)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def paired_comparison(a: dict[int, float | None], b: dict[int, float | None]) -> dict:
    """Arm a against arm b over the seeds both have a finite value for (seed -> value maps)."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None
                   and math.isfinite(float(a[s])) and math.isfinite(float(b[s])))
    d = np.asarray([float(a[s]) - float(b[s]) for s in seeds], np.float64)
    return {"n": int(d.size), "seeds": seeds,
            "delta": float(d.mean()) if d.size else None,
            "sd": float(d.std(ddof=1)) if d.size > 1 else None,
            "ci95": bootstrap_ci(d), "t_ci95": t_ci(d),
            "wilcoxon_p": wilcoxon_p(d), "sign_p": sign_p(d),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}


def with_holm(comparisons: list[dict]) -> list[dict]:
    """The comparisons of one table with `holm_p` (Holm over their Wilcoxon p-values) added."""
    adjusted = holm([c.get("wilcoxon_p") for c in comparisons])
    return [{**c, "holm_p": h} for c, h in zip(comparisons, adjusted, strict=True)]


def aubc(labels: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Area under the budget curve: trapezoid of `values` over `labels`, divided by the label range, so a
    metric in [0, 1] gives an AUBC in [0, 1]. One point (no curve) gives that point; a missing value, None."""
    pts = sorted(zip((float(x) for x in labels), values, strict=True))
    if not pts or any(v is None or not math.isfinite(float(v)) for _, v in pts):
        return None
    xs = np.asarray([p[0] for p in pts])
    ys = np.asarray([float(p[1]) for p in pts])
    span = xs[-1] - xs[0]
    if span <= 0:
        return float(ys.mean())
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0) / span)
