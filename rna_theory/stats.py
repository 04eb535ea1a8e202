"""Confidence intervals with explicit error rates for the Monte Carlo checks.

Every statistical check in the project runs at a false-failure rate of at most
:data:`FALSE_FAILURE` per verdict: intervals are built at that level (split over the number of
simultaneous comparisons where a verdict combines several), so a correct implementation is
declared violated with probability <= 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Probability that a correct implementation fails one statistical verdict.
FALSE_FAILURE = 1e-6


def clopper_pearson(successes: int, trials: int, alpha: float = FALSE_FAILURE) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval for a binomial proportion."""
    if trials <= 0:
        raise ValueError("trials must be positive")
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1,
                                                                  trials - successes))
    return lo, hi


def mean_ci(samples: np.ndarray, alpha: float = FALSE_FAILURE) -> tuple[float, float, float]:
    """Mean and a two-sided (1 - alpha) Student-t interval of i.i.d. samples.

    Valid asymptotically (CLT); callers use it where samples have light tails and n >= 1000, or
    where a Gaussian sampling distribution is exact (quantities linear in Gaussian noise).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    n = x.size
    m = float(x.mean())
    if n < 2:
        return m, -math.inf, math.inf
    se = float(x.std(ddof=1)) / math.sqrt(n)
    q = float(stats.t.ppf(1 - alpha / 2, n - 1))
    return m, m - q * se, m + q * se


def hoeffding_halfwidth(n: int, alpha: float = FALSE_FAILURE, value_range: float = 1.0) -> float:
    """Half-width t with P(|mean - E| >= t) <= alpha for n i.i.d. samples in an interval of given width."""
    return value_range * math.sqrt(math.log(2 / alpha) / (2 * n))


def variance_ci(sum_sq: float, dof: int, alpha: float = FALSE_FAILURE) -> tuple[float, float]:
    """Exact (1 - alpha) interval for sigma^2 from a sum of squares ~ sigma^2 chi2(dof)."""
    lo = sum_sq / float(stats.chi2.ppf(1 - alpha / 2, dof))
    hi = sum_sq / float(stats.chi2.ppf(alpha / 2, dof))
    return lo, hi


def clopper_pearson_array(successes: np.ndarray, trials: int, alpha: float = FALSE_FAILURE) -> np.ndarray:
    """Vectorised :func:`clopper_pearson`: returns an array (..., 2) of lower and upper limits."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = np.where(k == 0, 0.0, stats.beta.ppf(alpha / 2, k, trials - k + 1))
        hi = np.where(k == trials, 1.0, stats.beta.ppf(1 - alpha / 2, k + 1, trials - k))
    return np.stack([lo, hi], axis=-1)
