"""Property-based checks of C4 and C6 over random dimensions, scales and seeds."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rna_theory.bounds import certified_probability, certified_radius, lipschitz_lower_bound
from rna_theory.identities import rm_target_gradients
from rna_theory.stats import FALSE_FAILURE, clopper_pearson_array

EXAMPLES = 15


@settings(max_examples=EXAMPLES)
@given(st.integers(1, 8), st.integers(1, 6), st.floats(0.01, 1.0), st.floats(0.1, 10.0), st.integers(0, 10_000))
def test_c4_noisy_rm_gradient_mean_is_clean(d_in, d_out, nu, alpha, seed):
    torch.manual_seed(seed)
    enc = torch.nn.Linear(d_in, d_out).double()
    x = torch.randn(5, d_in, dtype=torch.float64)
    target = torch.randn(5, d_out, dtype=torch.float64)
    draws = 200
    res = rm_target_gradients(enc, x, target, alpha, nu, draws, seed=seed)
    u = np.random.default_rng(seed).standard_normal(res.clean.size)
    sd = np.sqrt(u @ res.predicted_cov @ u / draws)
    z = stats.norm.ppf(1 - FALSE_FAILURE / (2 * EXAMPLES))
    assert abs(u @ (res.draws.mean(0) - res.clean)) <= z * sd + 1e-12


def _smoothed_counts(w, b, z, nu, n, rng):
    """Label counts sampled from a softmax-linear head at z + N(0, nu^2 I): Multinomial(n, pbar)."""
    noisy = z[None, :] + nu * rng.standard_normal((n, z.size))
    logits = noisy @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    u = rng.random((n, 1))
    labels = (p.cumsum(1) < u).sum(1)
    return np.bincount(np.minimum(labels, w.shape[0] - 1), minlength=w.shape[0])


@settings(max_examples=EXAMPLES)
@given(st.integers(2, 12), st.integers(2, 5), st.floats(0.1, 1.5), st.floats(0.0, 3.0), st.integers(0, 10_000))
def test_c6a_lipschitz_bound_never_exceeded(d, k, nu, frac, seed):
    rng = np.random.default_rng(seed)
    w, b = 2 * rng.standard_normal((k, d)), rng.standard_normal(k)
    z = rng.standard_normal(d)
    eps = rng.standard_normal(d)
    eps *= frac * nu / np.linalg.norm(eps)
    n = 20_000
    alpha = FALSE_FAILURE / (2 * EXAMPLES)
    c0 = _smoothed_counts(w, b, z, nu, n, rng)
    y = int(c0.argmax())
    c1 = _smoothed_counts(w, b, z + eps, nu, n, rng)
    lower0 = clopper_pearson_array(c0[y], n, alpha)[0]
    upper1 = clopper_pearson_array(c1[y], n, alpha)[1]
    assert upper1 >= lipschitz_lower_bound(lower0, frac * nu, nu) - 1e-12


@settings(max_examples=EXAMPLES)
@given(st.integers(1, 40), st.floats(0.05, 2.0), st.floats(0.1, 3.0), st.integers(0, 10_000))
def test_c6b_chi2_bound_never_exceeded_for_smoothed_halfspaces(d, nu, dist, seed):
    """Smoothed binary linear head: the prediction at z + eps is sign(w.(z+eps)) exactly; compare
    the Monte Carlo frequency of unchanged predictions with F_chi2_d(R^2/eta^2)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    z = dist * w  # distance to the boundary = dist
    p_a = stats.norm.cdf(dist / nu)  # smoothed top-class probability of the hard half-space
    radius = float(certified_radius(p_a, 1 - p_a, nu))
    eta = radius / np.sqrt(stats.chi2.ppf(0.5, d))
    n = 4000
    eps = eta * rng.standard_normal((n, d))
    unchanged = int(np.sum((z + eps) @ w > 0))
    upper = clopper_pearson_array(unchanged, n, FALSE_FAILURE / EXAMPLES)[1]
    assert upper >= certified_probability(radius, eta, d)
