"""C6 bounds and the (generalised) chi-square machinery."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rna_theory import RNAError
from rna_theory.bounds import (
    anisotropic_certified_probability,
    certified_probability,
    certified_radius,
    concentration_bound,
    first_order_probability,
    generalized_chi2_cdf,
    imhof_cdf,
    lipschitz_lower_bound,
    probit_margin,
)
from rna_theory.stats import FALSE_FAILURE, clopper_pearson

EXAMPLES = 25  # hypothesis examples per test (tests/conftest.py); statistical levels split over them
Z = stats.norm.ppf(1 - FALSE_FAILURE / (2 * EXAMPLES))


@given(st.floats(0.51, 0.999), st.floats(0.01, 3.0))
def test_radius_binary_equals_nu_probit(p, nu):
    assert certified_radius(p, 1 - p, nu) == pytest.approx(nu * stats.norm.ppf(p))
    assert certified_radius(p, 1 - p, nu) == pytest.approx(nu * probit_margin(p, 1 - p))


def test_radius_is_zero_without_a_margin():
    assert certified_radius(0.4, 0.5, 1.0) == 0.0


@given(st.floats(0.01, 0.99), st.floats(0.0, 5.0), st.floats(0.05, 2.0))
def test_lipschitz_bound_is_tight_for_a_halfspace(p, r, nu):
    # Smoothed hard half-space classifier: pbar(z) = Phi(a / nu); moving by r against the normal
    # gives exactly Phi(a/nu - r/nu), the bound.
    a = nu * stats.norm.ppf(p)
    assert lipschitz_lower_bound(p, r, nu) == pytest.approx(stats.norm.cdf((a - r) / nu), abs=1e-12)


@given(st.integers(1, 300), st.floats(0.01, 5.0), st.floats(0.01, 2.0))
def test_certified_probability_is_chi2(d, r, eta):
    assert certified_probability(r, eta, d) == pytest.approx(stats.chi2.cdf((r / eta) ** 2, d))
    assert certified_probability(r, eta, d) <= first_order_probability(r, eta) + 1e-12 or d == 1


def test_concentration_bound_edges():
    assert concentration_bound(0.0, 1.0, 1.0) == 1.0
    assert concentration_bound(-1.0, 1.0, 1.0) == 1.0  # |X| >= -1 is certain
    assert concentration_bound(1.0, 1.0, 1e-9) == pytest.approx(0.0)
    # tight constant L = 1/(nu sqrt(2 pi)): 2 exp(-t^2 / (2 eta^2 L^2)) = 2 exp(-pi t^2 nu^2 / eta^2)
    assert concentration_bound(0.1, 0.5, 0.05) == pytest.approx(2 * math.exp(-math.pi * 0.01 * 0.25 / 0.0025))


def test_the_smoothed_lipschitz_constant_is_attained_by_a_half_space():
    """pbar(z) = Phi(w.z / nu) for the half-space head 1[w.z > 0]: its gradient norm peaks at the
    boundary at phi(0)/nu = 1/(nu sqrt(2 pi)), the constant C6(c) uses (not sqrt(2/pi)/nu, twice it)."""
    from rna_theory.bounds import SMOOTHED_LIPSCHITZ

    nu = 0.7
    s = np.linspace(-5, 5, 200_001)
    grad = stats.norm.pdf(s / nu) / nu  # |d/ds Phi(s/nu)| along the unit normal w
    assert grad.max() == pytest.approx(SMOOTHED_LIPSCHITZ / nu, rel=1e-9)
    # Monte Carlo of the same head: the smoothed value's finite difference at the boundary
    rng = np.random.default_rng(0)
    delta = rng.standard_normal(2_000_000) * nu
    h = 0.05
    slope = (np.mean(delta + h > 0) - np.mean(delta - h > 0)) / (2 * h)
    assert slope == pytest.approx(SMOOTHED_LIPSCHITZ / nu, rel=0.02)


def test_bounds_outside_their_domain():
    assert float(certified_probability(-1.0, 0.5, 10)) == 0.0
    assert float(certified_probability(0.0, 0.5, 10)) == 0.0
    assert float(certified_probability(0.0, 0.0, 10)) == 1.0  # no perturbation: nothing changes
    mean, cov = np.zeros(3), np.eye(3)
    assert generalized_chi2_cdf(math.inf, mean, cov) == 1.0
    assert generalized_chi2_cdf(-1.0, mean, cov) == 0.0
    with pytest.raises(RNAError, match="NaN"):
        generalized_chi2_cdf(math.nan, mean, cov)
    with pytest.raises(RNAError, match="not symmetric"):
        generalized_chi2_cdf(1.0, mean, np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(RNAError, match="positive semi-definite"):
        generalized_chi2_cdf(1.0, mean, np.diag([1.0, -1.0, 1.0]))


@given(st.integers(1, 40), st.floats(0.1, 10.0), st.floats(0.0, 3.0), st.floats(0.05, 3.0))
def test_imhof_equal_weights_matches_scipy(k, w, delta, xfrac):
    x = xfrac * k * w * (1 + delta)
    got = imhof_cdf(x, np.full(k, w), np.full(k, delta / k))
    want = stats.ncx2.cdf(x / w, k, delta) if delta > 0 else stats.chi2.cdf(x / w, k)
    assert got == pytest.approx(want, abs=1e-8)


@settings(max_examples=10)
@given(st.integers(2, 60), st.integers(0, 10_000))
def test_imhof_matches_monte_carlo(k, seed):
    rng = np.random.default_rng(seed)
    w = rng.exponential(size=k)
    d = rng.exponential(size=k) * 0.5
    x = float(np.sum(w * (1 + d)))
    got = imhof_cdf(x, w, d)
    n = 40_000
    hits = int(np.sum(((rng.standard_normal((n, k)) + np.sqrt(d)) ** 2) @ w <= x))
    lo, hi = clopper_pearson(hits, n, FALSE_FAILURE / EXAMPLES)
    slack = 3e-3 if 4 <= k < 8 else 1e-7  # 4-7 terms use a 1e6-sample Monte Carlo internally
    assert lo - slack <= got <= hi + slack


def test_generalized_chi2_with_mean_and_covariance():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((12, 12))
    cov = a @ a.T / 12
    mean = rng.standard_normal(12) * 0.5
    x = float(np.trace(cov) + mean @ mean)
    exact = generalized_chi2_cdf(x, mean, cov)
    mc = generalized_chi2_cdf(x, mean, cov, method="mc", n_samples=400_000, seed=1)
    assert exact == pytest.approx(mc, abs=5 * math.sqrt(0.25 / 400_000) + 1e-3)
    # Rank-deficient covariance: the null directions hold the mean deterministically.
    cov2 = np.diag([1.0, 0.0])
    assert generalized_chi2_cdf(1.0 + 4.0, np.array([0.0, 2.0]), cov2) == pytest.approx(stats.chi2.cdf(1.0, 1))
    probs = anisotropic_certified_probability([1.0, 2.0], np.zeros(3), np.eye(3) * 0.25)
    assert probs == pytest.approx(stats.chi2.cdf(np.array([1.0, 4.0]) / 0.25, 3))


def test_bad_arguments():
    with pytest.raises(RNAError, match="eta"):
        certified_probability(1.0, -1.0, 3)
    with pytest.raises(RNAError, match="dim"):
        certified_probability(1.0, 1.0, 0)
    with pytest.raises(RNAError, match="nu"):
        certified_radius(0.9, 0.1, float("nan"))
    with pytest.raises(RNAError, match="cov"):
        generalized_chi2_cdf(1.0, np.zeros(3), np.eye(2))


def test_chi2_bound_holds_for_random_halfspaces():
    """C6(b) against exact probabilities: a smoothed linear head under eps ~ N(0, eta^2 I)."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        d = int(rng.integers(1, 50))
        a = float(rng.exponential())
        eta = float(rng.exponential())
        # Distance to the boundary is a; the radius of the smoothed hard classifier equals a.
        exact = stats.norm.cdf(a / eta)
        assert certified_probability(a, eta, d) <= exact + 1e-12
        assert first_order_probability(a, eta) == pytest.approx(exact)


def _two_term_cdf(x: float, w: np.ndarray, d: np.ndarray) -> float:
    """Oracle: P(w0 X0 + w1 X1 <= x) by one exact one-dimensional integral (X_j ~ chi2_1(d_j))."""
    from scipy import integrate

    def density(t: float) -> float:
        return float(stats.ncx2.pdf(t, 1, d[1]) if d[1] > 0 else stats.chi2.pdf(t, 1))

    def inner(t: float) -> float:
        rest = (x - w[1] * t) / w[0]
        return float(stats.ncx2.cdf(rest, 1, d[0]) if d[0] > 0 else stats.chi2.cdf(rest, 1))

    return integrate.quad(lambda t: inner(t) * density(t), 0, x / w[1], limit=400, epsabs=1e-13)[0]


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 12), st.integers(0, 10_000), st.floats(0.05, 4.0), st.booleans())
def test_ruben_series_is_exact(k, seed, xfrac, central):
    """Ruben's series (used for 2-7 terms; valid for any count) against a one-dimensional quadrature
    (2 terms), Imhof's rigorously truncated integral (8+ terms) and Monte Carlo (3-7 terms; 4e5 draws,
    tolerance 6 standard errors)."""
    from rna_theory.bounds import ruben_cdf

    rng = np.random.default_rng(seed)
    w = rng.uniform(0.05, 1.0, k)
    d = np.zeros(k) if central else rng.uniform(0, 3, k)
    x = xfrac * float(np.sum(w * (1 + d)))
    got = ruben_cdf(x, w, d)
    assert got is not None
    if k == 2:
        assert got == pytest.approx(_two_term_cdf(x, w, d), abs=1e-10)
    elif k >= 8:
        assert got == pytest.approx(imhof_cdf(x, w, d), abs=1e-8)
    else:
        q = ((rng.standard_normal((400_000, k)) + np.sqrt(d)) ** 2) @ w
        assert got == pytest.approx(float(np.mean(q <= x)), abs=6 * 0.5 / np.sqrt(400_000))


def test_few_term_generalised_chi2_is_deterministic_and_fast():
    import time

    w, d = np.array([1.0, 0.3, 0.01, 0.5, 0.2]), np.array([0.5, 0.0, 2.0, 0.1, 0.0])
    start = time.perf_counter()
    values = [imhof_cdf(x, w, d) for x in (0.5, 1.0, 3.0, 8.0)]
    assert time.perf_counter() - start < 30  # generous: seconds, not the minutes of nested quadrature
    assert values == [imhof_cdf(x, w, d) for x in (0.5, 1.0, 3.0, 8.0)] and values == sorted(values)
