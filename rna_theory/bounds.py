"""Claim C6: certified robustness of the noise-smoothed head (this project's form of Eq. 13).

With noise nu, the smoothed head pbar(y|z) = E p(y|z + delta), delta ~ N(0, nu^2 I), satisfies
(a) z -> Phi^-1(pbar_y(z)) is (1/nu)-Lipschitz, hence a certified radius
R = (nu/2)(Phi^-1(p_A) - Phi^-1(p_B)); (b) under Assumption 1 (eps ~ N(0, eta^2 I)) the
prediction is unchanged with probability >= F_chi2_d(R^2/eta^2), and for a measured anisotropic
eps ~ N(mu, Sigma) with probability >= P(||eps|| < R), a generalised chi-square; (c) pbar_y is
(1/(nu sqrt(2 pi)))-Lipschitz (tight: a smoothed half-space attains it), giving dimension-free
concentration; (d) to first order
pbar_y(z+eps) - pbar_y(z) ~ N(0, eta^2 ||grad pbar_y(z)||^2).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import integrate, stats

from rna_theory.errors import RNAError, check_array, check_finite, check_int

_P_CLIP = 1e-12
#: Absolute error bound of Ruben's series for generalised chi-squares of up to 7 terms.
_RUBEN_TOL = 1e-12
#: Most series terms before falling back to Imhof's integral (very unequal weights, large noncentrality).
_RUBEN_MAX_TERMS = 20_000


def _probit(p: np.ndarray | float) -> np.ndarray:
    return stats.norm.ppf(np.clip(p, _P_CLIP, 1 - _P_CLIP))


def certified_radius(p_a: np.ndarray | float, p_b: np.ndarray | float, nu: float) -> np.ndarray:
    """C6(a): radius (nu/2)(Phi^-1(p_A) - Phi^-1(p_B)) within which the top-1 class is certified.

    ``p_a`` is a lower bound on the top class's smoothed probability and ``p_b`` an upper bound on
    the runner-up's; the radius is clipped at 0 (no certificate).
    """
    nu = check_finite(nu, "nu", minimum=0.0)
    r = 0.5 * nu * (_probit(np.asarray(p_a, dtype=np.float64)) - _probit(np.asarray(p_b, dtype=np.float64)))
    return np.maximum(r, 0.0)


def probit_margin(p_a: np.ndarray | float, p_b: np.ndarray | float) -> np.ndarray:
    """(Phi^-1(p_A) - Phi^-1(p_B))/2: the certified radius per unit of noise std (R = nu * margin)."""
    return 0.5 * (_probit(np.asarray(p_a, dtype=np.float64)) - _probit(np.asarray(p_b, dtype=np.float64)))


def lipschitz_lower_bound(p_y: np.ndarray | float, eps_norm: np.ndarray | float, nu: float) -> np.ndarray:
    """C6(a): lower bound Phi(Phi^-1(pbar_y(z)) - ||eps||/nu) on pbar_y(z + eps)."""
    nu = check_finite(nu, "nu", minimum=0.0, strict=True)
    return stats.norm.cdf(_probit(np.asarray(p_y, dtype=np.float64)) - np.asarray(eps_norm) / nu)


def certified_probability(radius: np.ndarray | float, eta: float, dim: int) -> np.ndarray:
    """C6(b): P(||eps|| < R) = F_chi2_d(R^2 / eta^2) for eps ~ N(0, eta^2 I_d).

    A lower bound on the probability that the smoothed prediction survives the forget-token
    perturbation, valid for every head geometry (worst case over directions).
    """
    eta = check_finite(eta, "eta", minimum=0.0)
    dim = check_int(dim, "dim", minimum=1)
    r = np.asarray(radius, dtype=np.float64)
    if eta == 0.0:  # no perturbation: the prediction is unchanged (a negative radius certifies nothing)
        return (r >= 0).astype(np.float64)
    return np.where(r > 0, stats.chi2.cdf((np.maximum(r, 0.0) / eta) ** 2, dim), 0.0)


def first_order_probability(radius: np.ndarray | float, eta: float) -> np.ndarray:
    """Typical-case prediction Phi(R/eta) of an unchanged prediction.

    Exact for a linear decision boundary (binary smoothed head, whose radius equals the distance
    to the boundary); the perturbation's component along the boundary normal is N(0, eta^2).
    """
    eta = check_finite(eta, "eta", minimum=0.0)
    r = np.asarray(radius, dtype=np.float64)
    if eta == 0.0:  # no perturbation: the prediction is unchanged
        return (r >= 0).astype(np.float64)
    return stats.norm.cdf(r / eta)


#: Lipschitz constant of a nu-smoothed [0, 1]-valued head, times nu: sup_s phi(s) = 1/sqrt(2 pi)
#: (|u . grad pbar| <= phi(Phi^-1(pbar))/nu; equality for a smoothed half-space at its boundary).
SMOOTHED_LIPSCHITZ = 1.0 / math.sqrt(2.0 * math.pi)


def concentration_bound(t: np.ndarray | float, nu: float, eta: float) -> np.ndarray:
    """C6(c): P(|pbar_y(z+eps) - E pbar_y(z+eps)| >= t) <= 2 exp(-t^2 / (2 eta^2 L^2)), L = 1/(nu sqrt(2 pi)),
    i.e. 2 exp(-pi t^2 nu^2 / eta^2); 1 for t <= 0 (the event is certain)."""
    nu = check_finite(nu, "nu", minimum=0.0, strict=True)
    eta = check_finite(eta, "eta", minimum=0.0)
    t = np.asarray(t, dtype=np.float64)
    if eta == 0.0:
        return (t <= 0).astype(np.float64)
    lipschitz = SMOOTHED_LIPSCHITZ / nu
    bound = np.minimum(1.0, 2.0 * np.exp(-(t**2) / (2.0 * eta**2 * lipschitz**2)))
    return np.where(t <= 0, 1.0, bound)


def first_order_std(grad_norm: np.ndarray | float, eta: float) -> np.ndarray:
    """C6(d): predicted std eta * ||grad pbar_y(z)|| of pbar_y(z + eps) - pbar_y(z)."""
    eta = check_finite(eta, "eta", minimum=0.0)
    return eta * np.asarray(grad_norm, dtype=np.float64)


def _gen_chi2_terms(mean: np.ndarray, cov: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Weights, noncentralities and deterministic offset of ||eps||^2 for eps ~ N(mean, cov)."""
    evals, evecs = np.linalg.eigh(cov)
    proj = evecs.T @ mean
    keep = evals > tol * max(float(evals.max()), 0.0) if evals.max() > 0 else np.zeros_like(evals, bool)
    offset = float(np.sum(proj[~keep] ** 2))
    lam = evals[keep]
    delta = proj[keep] ** 2 / lam
    return lam, delta, offset


def imhof_cdf(x: float, weights: np.ndarray, noncentrality: np.ndarray | None = None) -> float:
    """CDF of Q = sum_j w_j chi2_1(delta_j) at x by Imhof's (1961) inversion formula.

    Positive weights only. Equal weights use the (noncentral) chi-square exactly; up to 7 terms
    Ruben's (1962) mixture series (absolute error <= 1e-12, rigorous); 8 or more terms, or a series
    that would need over 20,000 terms, Imhof's integral truncated with a rigorous tail bound
    (absolute error ~1e-9).
    """
    w = np.asarray(weights, dtype=np.float64)
    d = np.zeros_like(w) if noncentrality is None else np.asarray(noncentrality, dtype=np.float64)
    if w.size == 0:
        return float(x >= 0)
    if x <= 0:
        return 0.0
    scale = float(w.max())  # the distribution scales with the weights: work with max weight 1
    w, x = w / scale, x / scale
    if np.allclose(w, 1.0, rtol=1e-12, atol=0):
        return float(stats.ncx2.cdf(x, w.size, d.sum()) if d.sum() > 0 else stats.chi2.cdf(x, w.size))
    if w.size < 8:  # Imhof's integrand decays too slowly for few terms: Ruben's series instead
        value = ruben_cdf(x, w, d)
        if value is not None:
            return value

    def log_rho(u: float) -> float:
        wu2 = (w * u) ** 2
        return 0.25 * float(np.sum(np.log1p(wu2))) + 0.5 * float(np.sum(d * wu2 / (1 + wu2)))

    def integrand(u: float) -> float:
        if u == 0.0:
            return 0.5 * (float(np.sum(w * (1 + d))) - x)
        wu = w * u
        theta = 0.5 * float(np.sum(np.arctan(wu) + d * wu / (1 + wu**2))) - 0.5 * x * u
        return math.sin(theta) * math.exp(-log_rho(u)) / u

    # Truncation: |integral beyond U| <= (2/k) prod(w_j)^(-1/2) U^(-k/2); choose U for 1e-11.
    k = w.size
    log_c = -0.5 * float(np.sum(np.log(w))) + math.log(2.0 / k)
    upper = max(1.0, math.exp((log_c - math.log(1e-11)) * 2.0 / k))
    edges = [0.0, *np.geomspace(1e-3, upper, 80)]
    total = 0.0
    with warnings.catch_warnings():  # pieces near the tail hit round-off at ~1e-13, far below need
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for a, b in zip(edges, edges[1:]):  # piecewise: each piece holds few oscillations
            part, _ = integrate.quad(integrand, a, b, limit=400, epsabs=1e-12, epsrel=1e-10)
            total += part
    return float(min(1.0, max(0.0, 0.5 - total / math.pi)))


def ruben_cdf(x: float, weights: np.ndarray, noncentrality: np.ndarray, *, tol: float = _RUBEN_TOL,
              max_terms: int = _RUBEN_MAX_TERMS) -> float | None:
    """P(sum_j w_j chi2_1(d_j) <= x) by Ruben's mixture: sum_m a_m F_{chi2_(k+2m)}(x / beta), beta = min w.

    With p_j = beta / w_j and q_j = 1 - p_j, the moment generating function is
    sum_m a_m (1 - 2 beta t)^(-(k+2m)/2) where a_0 = prod sqrt(p_j) exp(-sum d_j / 2) and
    (m+1) a_(m+1) = sum_(r<=m) a_r h_(m-r), h_n = sum_j [q_j^(n+1) / 2 + (d_j p_j / 2)(n+1) q_j^n]. Every
    a_m >= 0 and they sum to 1, so stopping after M terms errs by at most
    (1 - sum_(m<M) a_m) F_{chi2_(k+2M)}(x / beta): the series stops when that is below ``tol``.
    Returns None when that needs more than ``max_terms`` terms (or a_0 underflows).
    """
    w = np.asarray(weights, dtype=np.float64)
    d = np.asarray(noncentrality, dtype=np.float64)
    k, beta = w.size, float(w.min())
    p = beta / w
    q = 1.0 - p
    log_a0 = 0.5 * float(np.sum(np.log(p))) - 0.5 * float(d.sum())
    if log_a0 < -700.0:
        return None
    a = np.zeros(max_terms + 1)
    h = np.zeros(max_terms + 1)
    a[0] = math.exp(log_a0)
    y = x / beta
    total, mass = a[0] * stats.chi2.cdf(y, k), a[0]
    qn = np.ones_like(q)  # q_j^n
    for m in range(max_terms):
        h[m] = float(np.sum(0.5 * qn * q + 0.5 * d * p * (m + 1) * qn))
        qn = qn * q
        a[m + 1] = float(np.dot(a[: m + 1], h[m::-1])) / (m + 1)
        mass += a[m + 1]
        tail_cdf = stats.chi2.cdf(y, k + 2 * (m + 1))
        total += a[m + 1] * tail_cdf
        if max(0.0, 1.0 - mass) * tail_cdf < tol or tail_cdf < tol:
            return float(min(1.0, max(0.0, total)))
    return None


def check_covariance(cov: np.ndarray, dim: int) -> np.ndarray:
    """``cov`` as a d x d float array, refused unless symmetric positive semi-definite (to rounding)."""
    cov = check_array(cov, "cov", ndim=2)
    if cov.shape != (dim, dim):
        raise RNAError(f"cov has shape {cov.shape} but mean has length {dim}", where="cov",
                       fix="pass a d x d covariance for a length-d mean")
    scale = max(float(np.abs(cov).max()), 1e-300)
    if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-10 * scale):
        raise RNAError("cov is not symmetric", where="cov", fix="pass a covariance matrix (e.g. np.cov(diffs.T))")
    low = float(np.linalg.eigvalsh(cov).min())
    if low < -1e-8 * scale * dim:
        raise RNAError(f"cov is not positive semi-definite (smallest eigenvalue {low:.3g})", where="cov",
                       fix="pass a covariance matrix (e.g. np.cov(diffs.T))")
    return cov


def generalized_chi2_cdf(x: float, mean: np.ndarray, cov: np.ndarray, *, method: str = "imhof",
                         n_samples: int = 200_000, seed: int = 0, tol: float = 1e-10) -> float:
    """P(||eps||^2 <= x) for eps ~ N(mean, cov): Imhof inversion or Monte Carlo.

    ``x = inf`` gives 1 and ``x < 0`` gives 0; a NaN ``x`` and a covariance that is not symmetric
    positive semi-definite (to rounding) are errors.
    """
    mean = check_array(mean, "mean", ndim=1)
    cov = check_covariance(cov, mean.size)
    if math.isnan(float(x)):
        raise RNAError("x is NaN", where="x", fix="pass a number (the squared radius)")
    if x == math.inf:
        return 1.0
    if x < 0:
        return 0.0
    lam, delta, offset = _gen_chi2_terms(mean, cov, tol)
    if method == "imhof":
        return imhof_cdf(x - offset, lam, delta)
    if method == "mc":
        rng = np.random.default_rng(seed)
        xi = rng.standard_normal((n_samples, lam.size))
        q = ((xi + np.sqrt(delta)) ** 2) @ lam + offset
        return float(np.mean(q <= x))
    raise RNAError(f"unknown method {method!r}", where="method", fix="use 'imhof' or 'mc'")


def anisotropic_certified_probability(radius: np.ndarray | float, mean: np.ndarray, cov: np.ndarray,
                                      *, method: str = "imhof") -> np.ndarray:
    """C6(b) for a measured eps ~ N(mu, Sigma): P(||eps|| < R) per radius."""
    radii = np.atleast_1d(np.asarray(radius, dtype=np.float64))
    mean = check_array(mean, "mean", ndim=1)
    cov = check_covariance(cov, mean.size)
    lam, delta, offset = _gen_chi2_terms(mean, cov, 1e-10)
    out = np.empty_like(radii)
    for i, r in enumerate(radii):
        if method == "imhof":
            out[i] = imhof_cdf(r * r - offset, lam, delta) if r > 0 else 0.0
        else:
            out[i] = generalized_chi2_cdf(r * r, mean, cov, method=method) if r > 0 else 0.0
    return out.reshape(np.shape(radius))
