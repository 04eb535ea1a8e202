"""Claim C1: Assumption 1 made measurable from paired latents.

Assumption 1 models a forget-token's effect on a retain query's latent as z' = z + eps with
eps ~ N(0, eta^2 I). Given paired clean / perturbed latents (rows aligned), these estimators
measure how far that holds: the mean shift mu (the assumption says 0), the covariance spectrum
(isotropy says flat), the isotropic scale eta = sqrt(mean per-coordinate variance), the effective
rank, and Gaussianity of random 1-D projections (Anderson-Darling, Shapiro-Wilk, excess kurtosis).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from rna_theory.errors import RNAError, check_array, check_int
from rna_theory.stats import FALSE_FAILURE, variance_ci

#: Level of each Gaussianity test; the combined verdict uses Bonferroni over projections.
GAUSSIANITY_ALPHA = 0.01


@dataclasses.dataclass
class Gaussianity:
    """Normality of the centered differences along random unit directions."""

    n_projections: int
    shapiro_min_p: float
    shapiro_rejected: int
    anderson_statistic_max: float
    anderson_min_p: float
    anderson_rejected: int
    excess_kurtosis_mean: float
    excess_kurtosis_max_abs: float
    skewness_max_abs: float
    rejected: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Assumption1Result:
    """C1 estimates from n paired d-dimensional latents."""

    n: int
    dim: int
    mean: np.ndarray
    mean_norm: float
    eta: float
    eta_ci: tuple[float, float]
    rms: float
    spectrum: np.ndarray
    effective_rank: float
    participation_ratio: float
    anisotropy: float
    gaussianity: Gaussianity | None
    robust_eta: float
    top1pct_variance_share: float

    @property
    def covariance_trace(self) -> float:
        """Total variance, d * eta^2."""
        return float(self.dim * self.eta**2)

    def to_dict(self, max_spectrum: int = 256) -> dict[str, Any]:
        """JSON-safe dict (spectrum truncated to its ``max_spectrum`` largest eigenvalues)."""
        return {
            "n": self.n, "dim": self.dim, "mean_norm": self.mean_norm, "eta": self.eta,
            "eta_ci": list(self.eta_ci), "rms": self.rms,
            "spectrum": self.spectrum[:max_spectrum].tolist(),
            "effective_rank": self.effective_rank, "participation_ratio": self.participation_ratio,
            "anisotropy": self.anisotropy,
            "gaussianity": self.gaussianity.to_dict() if self.gaussianity else None,
            "robust_eta": self.robust_eta, "top1pct_variance_share": self.top1pct_variance_share,
        }


def differences(clean: Any, perturbed: Any) -> np.ndarray:
    """Validated eps = perturbed - clean, shape (n, d), float64."""
    c = check_array(clean, "clean", ndim=2)
    p = check_array(perturbed, "perturbed", ndim=2)
    if c.shape != p.shape:
        raise RNAError(f"clean has shape {c.shape} but perturbed has {p.shape}", where="latents",
                       fix="pass paired rows: the same number of rows and the same dimension")
    return p - c


def spectrum(diffs: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the sample covariance of the rows of ``diffs``."""
    centered = diffs - diffs.mean(axis=0)
    n = diffs.shape[0]
    if n < 2:
        return np.zeros(1)
    sv = np.linalg.svd(centered, compute_uv=False)
    return sv**2 / (n - 1)


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp(entropy) of the normalised spectrum (Roy & Vetterli 2007); d for an isotropic covariance."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam[lam > 0] / total
    return float(math.exp(-np.sum(p * np.log(p))))


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2: another effective dimension, more sensitive to the top modes."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    denom = float(np.sum(lam**2))
    return float(lam.sum() ** 2 / denom) if denom > 0 else 0.0


def gaussianity(diffs: np.ndarray, *, n_projections: int = 16, seed: int = 0,
                alpha: float = GAUSSIANITY_ALPHA) -> Gaussianity:
    """Normality tests of the centered rows projected on random unit directions.

    Rejects when any projection fails Shapiro-Wilk at the Bonferroni level alpha / n_projections.
    """
    n = diffs.shape[0]
    if n < 8:
        raise RNAError(f"Gaussianity tests need at least 8 pairs, got {n}", where="latents",
                       fix="collect more paired queries")
    rng = np.random.default_rng(seed)
    centered = diffs - diffs.mean(axis=0)
    directions = rng.standard_normal((diffs.shape[1], n_projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    proj = centered @ directions
    sw_p, ad_stat, ad_p, kurt, skew = [], [], [], [], []
    for j in range(n_projections):
        x = proj[:, j]
        if np.std(x) == 0:
            sw_p.append(0.0)
            ad_stat.append(math.inf)
            ad_p.append(0.0)
            kurt.append(math.nan)
            skew.append(math.nan)
            continue
        sw_p.append(float(stats.shapiro(x[:5000]).pvalue))
        ad = stats.anderson(x, dist="norm", method="interpolate")
        ad_stat.append(float(ad.statistic))
        ad_p.append(float(ad.pvalue))
        kurt.append(float(stats.kurtosis(x)))
        skew.append(float(stats.skew(x)))
    sw = np.array(sw_p)
    level = alpha / n_projections
    return Gaussianity(
        n_projections=n_projections,
        shapiro_min_p=float(sw.min()),
        shapiro_rejected=int(np.sum(sw < alpha)),
        anderson_statistic_max=float(np.max(ad_stat)),
        anderson_min_p=float(np.min(ad_p)),
        anderson_rejected=int(np.sum(np.array(ad_p) <= alpha)),  # table p-values saturate at 0.01
        excess_kurtosis_mean=float(np.nanmean(kurt)),
        excess_kurtosis_max_abs=float(np.nanmax(np.abs(kurt))) if not np.all(np.isnan(kurt)) else math.nan,
        skewness_max_abs=float(np.nanmax(np.abs(skew))) if not np.all(np.isnan(skew)) else math.nan,
        rejected=bool(sw.min() < level),
    )


def tail_summary(diffs: np.ndarray) -> tuple[float, float]:
    """How much outliers drive eta: (robust scale, top-1% variance share).

    The robust scale is 1.4826 x the median absolute deviation of the pooled centred coordinates
    (equal to eta for Gaussian differences); the share is the fraction of the total variance carried
    by the 1% highest-variance coordinates (0.01 for isotropic differences). LLM activations have a
    few massive coordinates, which these two numbers expose.
    """
    centred = diffs - diffs.mean(axis=0)
    pooled = centred.ravel()
    var = np.sort(centred.var(axis=0))[::-1]
    top = max(1, math.ceil(0.01 * var.size))
    total = float(var.sum())
    robust = float(1.4826 * np.median(np.abs(pooled - np.median(pooled))))
    return robust, float(var[:top].sum() / total) if total > 0 else math.nan


def assumption1(clean: Any, perturbed: Any, *, seed: int = 0, n_projections: int = 16,
                ci_alpha: float = FALSE_FAILURE) -> Assumption1Result:
    """All C1 estimates for paired latents ``clean`` and ``perturbed`` (n x d, rows paired).

    ``eta_ci`` is the exact chi-square interval for eta when the differences are isotropic
    Gaussian (centered sum of squares ~ eta^2 chi2((n-1)d)); under anisotropy it is too narrow
    and the spectrum says so.
    """
    diffs = differences(clean, perturbed)
    n, d = diffs.shape
    check_int(n, "latents rows", minimum=2, fix="pass at least 2 paired queries")
    mu = diffs.mean(axis=0)
    centered = diffs - mu
    sum_sq = float(np.sum(centered**2))
    dof = (n - 1) * d
    eta = math.sqrt(sum_sq / dof)
    lo, hi = variance_ci(sum_sq, dof, ci_alpha) if sum_sq > 0 else (0.0, 0.0)
    lam = spectrum(diffs)
    mean_lam = float(lam.sum() / d)
    robust, share = tail_summary(diffs)
    return Assumption1Result(
        n=n, dim=d, mean=mu, mean_norm=float(np.linalg.norm(mu)), eta=eta,
        eta_ci=(math.sqrt(lo), math.sqrt(hi)), rms=float(np.sqrt(np.mean(diffs**2))),
        spectrum=lam, effective_rank=effective_rank(lam), participation_ratio=participation_ratio(lam),
        anisotropy=float(lam[0] / mean_lam) if mean_lam > 0 else math.nan,
        gaussianity=gaussianity(diffs, n_projections=n_projections, seed=seed) if n >= 8 else None,
        robust_eta=robust, top1pct_variance_share=share,
    )
