"""C2/C3 predictions: closed forms, Hessian traces, the second-order expansion and ridge."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rna_theory.predictions import (
    expected_increase_mc,
    hessian_trace,
    hutchinson_trace,
    linear_head_increase,
    noisy_least_squares_sgd,
    ridge_lambda,
    ridge_solution,
    second_order_increase,
)
from rna_theory.settings import softmax_linear
from rna_theory.stats import FALSE_FAILURE

EXAMPLES = 25


def _softmax_loss(w, y):
    return lambda z: torch.nn.functional.cross_entropy(z @ w.T, y.repeat(z.shape[0] // y.shape[0]),
                                                       reduction="none")


@given(st.integers(1, 12), st.integers(2, 5), st.integers(0, 1000))
def test_hessian_trace_matches_autograd(d, k, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (3,), generator=g)
    z = torch.randn(3, d, generator=g, dtype=torch.float64)
    loss = _softmax_loss(w, y)
    want = [torch.autograd.functional.hessian(
        lambda v, i=i: torch.nn.functional.cross_entropy((v @ w.T).unsqueeze(0), y[i : i + 1]), z[i]).trace()
        for i in range(3)]
    assert hessian_trace(loss, z).numpy() == pytest.approx(torch.stack(want).numpy(), rel=1e-9, abs=1e-12)


def test_hutchinson_interval_contains_exact_trace():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (8,), generator=g)
    z = torch.randn(8, 20, generator=g, dtype=torch.float64)
    loss = _softmax_loss(w, y)
    est = hutchinson_trace(loss, z, n_probes=200, seed=1)
    exact = float(hessian_trace(loss, z).mean())
    assert est.ci[0] <= exact <= est.ci[1]


@given(st.integers(1, 10), st.floats(0.05, 1.0), st.integers(0, 1000))
def test_linear_head_exact_increase(d, eta, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    z = torch.randn(4, d, generator=g, dtype=torch.float64)
    y = torch.randn(4, generator=g, dtype=torch.float64)

    def loss(v):
        return (v @ w - y.repeat(v.shape[0] // 4)) ** 2

    est = expected_increase_mc(loss, z, eta, 2000, seed=seed, alpha=FALSE_FAILURE / EXAMPLES)
    exact = linear_head_increase(w.numpy(), eta)
    assert est.measured_ci[0] <= exact <= est.measured_ci[1]
    assert est.predicted == pytest.approx(exact)  # the second order is exact for a quadratic
    assert abs(est.gap) < 1e-12


def test_second_order_remainder_is_fourth_order():
    s = softmax_linear(seed=0)
    loss, z = s.loss_fn(64), s.z[:64]
    a = expected_increase_mc(loss, z, 0.4, 3000, seed=1)
    b = expected_increase_mc(loss, z, 0.2, 3000, seed=2)
    assert a.gap_ci[0] > 0 and b.gap_ci[0] > 0  # resolved from zero
    assert 8 <= a.gap / b.gap <= 32  # 16 for an O(eta^4) remainder
    assert second_order_increase(2.0, 0.1) == pytest.approx(0.01)


@given(st.integers(2, 30), st.integers(1, 6), st.floats(0.0, 2.0), st.integers(0, 1000))
def test_ridge_is_the_noisy_least_squares_minimiser(n, d, nu, seed):
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    w = ridge_solution(z, y, ridge_lambda(n, nu))
    # Gradient of the exact expected objective (1/n)||y - Zw||^2 + nu^2 ||w||^2 vanishes.
    grad = -2 / n * z.T @ (y - z @ w) + 2 * nu**2 * w
    assert np.allclose(grad, 0, atol=1e-9 * (1 + np.abs(z).max() ** 2))


def test_noisy_sgd_lands_on_ridge():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 5))
    y = z @ rng.standard_normal(5) + 0.1 * rng.standard_normal(200)
    w_sgd = noisy_least_squares_sgd(z, y, 0.5, steps=30_000, seed=1)
    w_ridge = ridge_solution(z, y, ridge_lambda(200, 0.5))
    w_ols = ridge_solution(z, y, 0.0)
    assert np.linalg.norm(w_sgd - w_ridge) < 0.1 * np.linalg.norm(w_ols - w_ridge)
