"""Claims C2 and C3: how a Gaussian latent perturbation changes the loss, and what noisy training does.

C2: E l(z + eps) - l(z) = (eta^2/2) tr Hess_z l(z) + O(eta^4) for smooth l; exactly
eta^2 ||W||_F^2 for the squared loss of a linear head; >= 0 when l is convex in z (Jensen).
C3: training on z + delta, delta ~ N(0, nu^2 I), adds (nu^2/2) tr H to the objective; for least
squares on n samples the minimiser is ridge regression with lambda = n nu^2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from rna_theory.errors import check_array, check_finite, check_int
from rna_theory.stats import FALSE_FAILURE, mean_ci

LossFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps latents (m, d) to per-row losses (m,); float64."""


def linear_head_increase(weights: np.ndarray, eta: float) -> float:
    """Exact C2 value eta^2 ||W||_F^2 for squared loss of a linear head W (k x d or d)."""
    w = check_array(weights, "weights")
    eta = check_finite(eta, "eta", minimum=0.0)
    return float(eta**2 * np.sum(w**2))


def second_order_increase(trace_hessian: float | np.ndarray, eta: float) -> np.ndarray:
    """C2/C3 second-order prediction (eta^2 / 2) tr H."""
    eta = check_finite(eta, "eta", minimum=0.0)
    return 0.5 * eta**2 * np.asarray(trace_hessian, dtype=np.float64)


def hessian_trace(loss: LossFn, z: torch.Tensor) -> torch.Tensor:
    """Exact tr Hess_z l at each row of ``z`` (m, d) by d Hessian-vector products."""
    z = z.detach().to(torch.float64)
    m, d = z.shape
    traces = torch.zeros(m, dtype=torch.float64)
    for j in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[j] = 1.0
        traces += _hvp_quadratic(loss, z, e.expand(m, d))
    return traces


def _hvp_quadratic(loss: LossFn, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v_i^T H_i v_i per row i (rows are independent samples, so one batched HVP suffices)."""
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(zz).sum(), zz, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), zz)
    return (hv * v).sum(dim=1).detach()


@dataclasses.dataclass
class TraceEstimate:
    """Hutchinson estimate of tr H with a confidence interval (per row means averaged)."""

    mean: float
    ci: tuple[float, float]
    per_row: np.ndarray


def hutchinson_trace(loss: LossFn, z: torch.Tensor, n_probes: int = 64, *, seed: int = 0,
                     alpha: float = FALSE_FAILURE) -> TraceEstimate:
    """Hutchinson estimator E[v^T H v] = tr H with Rademacher probes v, batched over rows of z.

    Cost: ``n_probes`` HVPs regardless of d, so it scales to LLM hidden sizes where the exact
    trace (d HVPs) does not. The interval is over the per-probe estimates of the row-average trace.
    """
    n_probes = check_int(n_probes, "n_probes", minimum=2)
    z = z.detach().to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_probes):
        v = torch.randint(0, 2, z.shape, generator=gen, dtype=torch.int64).to(torch.float64) * 2 - 1
        samples.append(_hvp_quadratic(loss, z, v).numpy())
    arr = np.stack(samples)  # probes x rows
    m, lo, hi = mean_ci(arr.mean(axis=1), alpha)
    return TraceEstimate(mean=m, ci=(lo, hi), per_row=arr.mean(axis=0))


@dataclasses.dataclass
class IncreaseEstimate:
    """Monte Carlo estimate of E l(z+eps) - l(z) and of its gap to the second-order prediction."""

    eta: float
    predicted: float
    measured: float
    measured_ci: tuple[float, float]
    gap: float
    gap_ci: tuple[float, float]


def expected_increase_mc(loss: LossFn, z: torch.Tensor, eta: float, n_samples: int, *, seed: int = 0,
                         alpha: float = FALSE_FAILURE) -> IncreaseEstimate:
    """Measure E_eps l(z+eps) - l(z), eps ~ N(0, eta^2 I), averaged over the rows of ``z``.

    Antithetic pairs (eps, -eps) remove odd orders; the quadratic term eta^2 e^T H e / 2, whose
    mean (eta^2/2) tr H is known exactly, is a control variate, so the gap to the second-order
    prediction is measured with error O(eta^4 / sqrt(n)) and its order in eta can be resolved.
    """
    eta = check_finite(eta, "eta", minimum=0.0)
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    z = z.detach().to(torch.float64)
    m, d = z.shape
    gen = torch.Generator().manual_seed(seed)
    base = loss(z).detach()
    tr = hessian_trace(loss, z)
    chunk = max(1, 4096 // m)
    diffs, gaps = [], []
    for start in range(0, n_samples, chunk):
        k = min(chunk, n_samples - start)
        e = torch.randn(k * m, d, generator=gen, dtype=torch.float64)
        zz = z.repeat(k, 1)
        anti = 0.5 * (loss(zz + eta * e) + loss(zz - eta * e)).detach() - base.repeat(k)
        quad = 0.5 * eta**2 * _hvp_quadratic(loss, zz, e)
        diffs.append(anti.view(k, m).mean(dim=1).numpy())
        gaps.append((anti - quad).view(k, m).mean(dim=1).numpy())
    mean, lo, hi = mean_ci(np.concatenate(diffs), alpha)
    gmean, glo, ghi = mean_ci(np.concatenate(gaps), alpha)
    return IncreaseEstimate(eta=eta, predicted=float(0.5 * eta**2 * tr.mean()), measured=mean,
                            measured_ci=(lo, hi), gap=gmean, gap_ci=(glo, ghi))


def ridge_lambda(n: int, nu: float) -> float:
    """C3: the ridge penalty n * nu^2 equivalent to input noise of std nu on n samples."""
    return check_int(n, "n", minimum=1) * check_finite(nu, "nu", minimum=0.0) ** 2


def ridge_solution(z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """argmin_w ||y - Z w||^2 + lam ||w||^2."""
    z = check_array(z, "Z", ndim=2)
    y = check_array(y, "y")
    lam = check_finite(lam, "lambda", minimum=0.0)
    d = z.shape[1]
    return np.linalg.solve(z.T @ z + lam * np.eye(d), z.T @ y)


def noisy_least_squares_sgd(z: np.ndarray, y: np.ndarray, nu: float, *, steps: int, batch: int = 32,
                            lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """Minibatch SGD on least squares with fresh input noise every step, tail-averaged iterates.

    The object of C3's numerical check: its limit should be the ridge solution with n nu^2.
    """
    rng = np.random.default_rng(seed)
    n, d = z.shape
    w = np.zeros(d)
    avg = np.zeros(d)
    count = 0
    for t in range(steps):
        idx = rng.integers(0, n, batch)
        zb = z[idx] + nu * rng.standard_normal((batch, d))
        grad = 2 * zb.T @ (zb @ w - y[idx]) / batch
        w -= lr / (1 + t / (steps / 10)) ** 0.6 * grad
        if t >= steps // 2:
            count += 1
            avg += (w - avg) / count
    return avg


def retain_cost(trace_hessian: float, nu: float | np.ndarray) -> np.ndarray:
    """C3: predicted increase (nu^2/2) tr H of the clean retain loss caused by training noise nu."""
    return 0.5 * np.asarray(nu, dtype=np.float64) ** 2 * float(trace_hessian)
