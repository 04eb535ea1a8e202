"""Sympy derivations (C2, C3) evaluated numerically; C4/C5 identities."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from rna_theory.identities import (
    kl_target_loss,
    rm_target_gradients,
    smoothed_cross_entropy,
    smoothed_probs,
)
from rna_theory.predictions import ridge_lambda, ridge_solution
from rna_theory.stats import FALSE_FAILURE
from rna_theory.symbolic import derive_linear_head_increase, derive_ridge_equivalence, gaussian_expectation

LINEAR = {d: derive_linear_head_increase(d) for d in (1, 2, 3)}
RIDGE = derive_ridge_equivalence(3, 2)


def test_derivations_are_proofs():
    assert all(d.proved for d in LINEAR.values())
    assert RIDGE.proved


def test_gaussian_moments():
    import sympy as sp

    e, s = sp.symbols("e s", positive=True)
    assert gaussian_expectation(e**4 + 3 * e + 1, [e], s) == 3 * s**4 + 1


@given(st.sampled_from([1, 2, 3]), st.integers(0, 10_000), st.floats(0.0, 3.0))
def test_linear_head_derivation_matches_numbers(d, seed, eta):
    rng = np.random.default_rng(seed)
    w, z, y = rng.standard_normal(d), rng.standard_normal(d), float(rng.standard_normal())
    assert LINEAR[d].evaluate(w, z, y, eta) == pytest.approx(eta**2 * float(w @ w), rel=1e-12, abs=1e-14)


@given(st.integers(0, 10_000), st.floats(0.01, 2.0))
def test_ridge_derivation_matches_numpy(seed, nu):
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((3, 2)), rng.standard_normal(3)
    assert RIDGE.evaluate(z, y, nu) == pytest.approx(ridge_solution(z, y, ridge_lambda(3, nu)), rel=1e-9, abs=1e-12)


def test_rm_target_gradient_is_unbiased_exactly():
    """C4: g(delta) - g_clean = -(2 alpha/N) J^T delta is Gaussian, so projections of the mean are exact z-tests."""
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).double()
    frozen = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    target = frozen(x).detach()
    draws = 300
    res = rm_target_gradients(enc, x, target, alpha=3.0, nu=0.2, n_draws=draws, seed=1)
    dev = res.draws.mean(0) - res.clean
    rng = np.random.default_rng(2)
    k = 8
    z_crit = stats.norm.ppf(1 - FALSE_FAILURE / (2 * k))
    for _ in range(k):
        u = rng.standard_normal(dev.size)
        sd = np.sqrt(u @ res.predicted_cov @ u / draws)
        assert abs(u @ dev) <= z_crit * sd
    # Exact linearity: each draw's deviation lies in the column space of J^T.
    assert np.linalg.matrix_rank(res.draws - res.clean, tol=1e-9) <= 50


def test_kl_to_noisy_reference_is_cross_entropy_to_smoothed():
    """C5: per draw, grad KL(p_ref(z+d) || p) = grad CE(p_ref(z+d), p); averaging gives CE(pbar)."""
    torch.manual_seed(1)
    teacher = torch.nn.Linear(4, 3).double()
    student = torch.nn.Linear(4, 3).double()
    z = torch.randn(7, 4, dtype=torch.float64)
    ref = teacher(z + 0.3 * torch.randn(7, 4, dtype=torch.float64)).detach()
    g1 = torch.autograd.grad(kl_target_loss(ref, student(z)), list(student.parameters()))
    g2 = torch.autograd.grad(smoothed_cross_entropy(torch.softmax(ref, -1), student(z)), list(student.parameters()))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-14)
    pbar = smoothed_probs(teacher, z, 0.0, 10)
    assert torch.allclose(pbar, torch.softmax(teacher(z), -1), atol=1e-14)
    pbar = smoothed_probs(teacher, z, 0.5, 5000, seed=3)
    assert torch.allclose(pbar.sum(-1), torch.ones(7, dtype=torch.float64))
