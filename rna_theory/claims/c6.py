"""C6 verifiers: the smoothed head's certificates, checked by Monte Carlo with exact error control.

Smoothed probabilities pbar(y|z) = E p(y|z + delta) are estimated by *sampling a label* from the
head at each noisy latent, so label counts are exactly Multinomial(n, pbar) and Clopper-Pearson
intervals are valid. A bound is declared violated only when the intervals (split over every
comparison, total level 1e-6) exclude it. Setting 1 uses a binary probit-linear head whose
smoothing has a closed form (pbar = Phi(a / sqrt(s^2 + nu^2 ||w||^2))), where the bounds are tight.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats

from rna_theory.bounds import (
    certified_probability,
    certified_radius,
    concentration_bound,
    first_order_probability,
    lipschitz_lower_bound,
)
from rna_theory.claims import Budget, ClaimResult, claim
from rna_theory.settings import DTYPE, Setting
from rna_theory.stats import FALSE_FAILURE, clopper_pearson, clopper_pearson_array

NU = {1: 0.5, 2: 0.5, 3: 0.2}


@dataclasses.dataclass
class Smoothed:
    """Oracle for the smoothed head: point estimates and confidence bounds of pbar per row."""

    estimate: Callable[[torch.Tensor, int, torch.Generator, float], tuple[np.ndarray, np.ndarray]]
    exact: bool
    n_classes: int
    grad_top: Callable[[torch.Tensor], np.ndarray]


def _probit_head(setting: Setting, nu: float) -> Smoothed:
    w = setting.weights
    scores = setting.z @ w
    c = float(scores.median())
    s = 1e-3 * float(scores.std())
    scale = math.sqrt(s**2 + nu**2 * float(w @ w))

    def estimate(z: torch.Tensor, n: int, gen: torch.Generator, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        p1 = stats.norm.cdf(((z @ w).numpy() - c) / scale)
        p = np.stack([1 - p1, p1], axis=1)
        return p, np.stack([p, p], axis=-1)  # exact: lower = upper = value

    def grad_top(z: torch.Tensor) -> np.ndarray:
        a = ((z @ w).numpy() - c) / scale
        sign = np.where(a >= 0, 1.0, -1.0)
        return (sign * stats.norm.pdf(a) / scale)[:, None] * w.numpy()[None, :]

    return Smoothed(estimate, True, 2, grad_top)


def _mc_head(setting: Setting, nu: float) -> Smoothed:
    head = setting.head

    def estimate(z: torch.Tensor, n: int, gen: torch.Generator, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        m, d = z.shape
        counts = np.zeros((m, int(head(z[:1]).shape[-1])))
        chunk = max(1, 200_000 // m)
        done = 0
        while done < n:
            k = min(chunk, n - done)
            zz = (z.unsqueeze(0) + nu * torch.randn((k, m, d), generator=gen, dtype=DTYPE)).reshape(-1, d)
            labels = torch.multinomial(torch.softmax(head(zz), -1), 1, generator=gen).view(k, m)
            for j in range(counts.shape[1]):
                counts[:, j] += (labels == j).sum(0).numpy()
            done += k
        return counts / n, clopper_pearson_array(counts, n, alpha)

    def grad_top(z: torch.Tensor) -> np.ndarray:
        gen = torch.Generator().manual_seed(7)
        zz = z.clone().requires_grad_(True)
        noise = nu * torch.randn((2000, *z.shape), generator=gen, dtype=DTYPE)
        probs = torch.softmax(head((zz.unsqueeze(0) + noise).reshape(-1, z.shape[1])), -1)
        pbar = probs.view(2000, z.shape[0], -1).mean(0)
        top = pbar.argmax(-1)
        (g,) = torch.autograd.grad(pbar.gather(1, top[:, None]).sum(), zz)
        return g.numpy()

    n_classes = int(head(setting.z[:1]).shape[-1])
    return Smoothed(estimate, False, n_classes, grad_top)


def _oracle(setting: Setting, nu: float) -> Smoothed:
    return _probit_head(setting, nu) if setting.index == 1 else _mc_head(setting, nu)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


@claim("C6", settings=(1, 2, 3))
def certificates(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """(a) Lipschitz bound and certified radius, (b) chi-square probability, (c) concentration,
    (d) first-order prediction."""
    nu = NU[setting.index]
    rows: list[ClaimResult] = []
    n_points = budget.n(8, 4)
    n_inner = budget.n(3000, 1500)
    radii_frac = (0.25, 0.5, 1.0, 2.0)
    # Each family of checks gets 1e-6 / 4, split over its intervals (Bonferroni).
    alpha = FALSE_FAILURE / 4 / (n_points * len(radii_frac) * 2 * 3 + 4 * n_points)
    oracle = _oracle(setting, nu)
    gen = torch.Generator().manual_seed(budget.seed + 41)
    z = setting.z[:n_points]
    d = setting.dim
    p0, b0 = oracle.estimate(z, n_inner, gen, alpha)
    top = p0.argmax(1)
    grads = oracle.grad_top(z)
    rng = np.random.default_rng(budget.seed + 43)

    # (a) Lipschitz lower bound along the adversarial (-grad) and a random direction.
    gaps, violations = [], 0
    for kind in ("adversarial", "random"):
        dirs = _unit(-grads if kind == "adversarial" else rng.standard_normal((n_points, d)))
        for frac in radii_frac:
            r = frac * nu
            p1, b1 = oracle.estimate(z + torch.from_numpy(r * dirs), n_inner, gen, alpha)
            idx = np.arange(n_points)
            bound_point = lipschitz_lower_bound(p0[idx, top], r, nu)
            bound_conf = lipschitz_lower_bound(b0[idx, top, 0], r, nu)
            gaps.extend((p1[idx, top] - bound_point).tolist())
            violations += int(np.sum(b1[idx, top, 1] < bound_conf))
    rows.append(ClaimResult("C6", setting.index, "(a) min pbar_y(z+eps) - Phi(Phi^-1(pbar_y(z)) - |eps|/nu)", 0.0,
                            float(np.min(gaps)), None, "violated" if violations else "holds",
                            f"{len(gaps)} (point, eps) pairs, |eps| in {radii_frac} x nu, adversarial + random "
                            f"directions; confident violations: {violations}; mean slack {np.mean(gaps):.3g}"
                            + (" (exact smoothing: slack 0 = tight)" if oracle.exact else "")))

    # (a) certified radius: moving 0.95 R towards the boundary must not flip the smoothed top class.
    second = np.argsort(-p0, axis=1)[:, 1]
    idx = np.arange(n_points)
    radius = certified_radius(b0[idx, top, 0], b0[idx, second, 1], nu)
    ok = radius > 0
    flips = 0
    if ok.any():
        for dirs in (_unit(-grads[ok]), _unit(rng.standard_normal((int(ok.sum()), d)))):
            zz = z[ok] + torch.from_numpy(0.95 * radius[ok, None] * dirs)
            p1, b1 = oracle.estimate(zz, n_inner, gen, alpha)
            t = top[ok]
            upper_top = b1[np.arange(len(t)), t, 1]
            lower_other = np.where(np.eye(oracle.n_classes, dtype=bool)[t], -1.0, b1[..., 0]).max(1)
            flips += int(np.sum(lower_other > upper_top))
    rows.append(ClaimResult("C6", setting.index, "(a) certified radius: confident flips within 0.95 R", 0.0,
                            float(flips), None, "violated" if flips else "holds",
                            f"{int(ok.sum())} of {n_points} points certified (R from Clopper-Pearson bounds), "
                            f"median R {np.median(radius[ok]) if ok.any() else 0:.3g}, nu={nu}"))

    rows.extend(_chi2_and_first_order(setting, oracle, z[ok], radius[ok], top[ok], nu, alpha, budget, gen))
    rows.extend(_concentration(setting, oracle, z, nu, alpha, budget, gen))
    rows.append(_first_order_std(setting, nu, budget, oracle))
    return rows


def _chi2_and_first_order(setting: Setting, oracle: Smoothed, z: torch.Tensor, radius: np.ndarray,
                          top: np.ndarray, nu: float, alpha: float, budget: Budget,
                          gen: torch.Generator) -> list[ClaimResult]:
    """(b) P(unchanged) >= F_chi2_d(R^2/eta^2) under eps ~ N(0, eta^2 I); and Phi(R/eta) as a prediction."""
    if z.shape[0] == 0:
        return [ClaimResult("C6", setting.index, "(b) chi-square bound", None, None, None, "inconclusive",
                            "no certified point")]
    d = setting.dim
    eta = float(np.median(radius)) / math.sqrt(stats.chi2.ppf(0.5, d))
    outer = budget.n(100, 40)
    n_inner = budget.n(1000, 500)
    changed = 0
    total = 0
    rng = np.random.default_rng(budget.seed + 47)
    # A flip counts only when confident, so the unchanged count can only be overstated (which
    # cannot cause a false violation) unless some interval fails: probability <= 1e-6 / 4.
    alpha_flip = FALSE_FAILURE / 4 / (outer * z.shape[0] * oracle.n_classes)
    for i in range(z.shape[0]):
        eps = torch.from_numpy(eta * rng.standard_normal((outer, d)))
        _p1, b1 = oracle.estimate(z[i : i + 1] + eps, n_inner, gen, alpha_flip)
        upper_top = b1[:, top[i], 1]
        lower_other = np.where(np.arange(oracle.n_classes)[None, :] == top[i], -1.0, b1[..., 0]).max(1)
        changed += int(np.sum(lower_other > upper_top))
        total += outer
    unchanged = total - changed
    lo, hi = clopper_pearson(unchanged, total, FALSE_FAILURE / 4)
    bound = float(np.mean(certified_probability(radius, eta, d)))
    first = float(np.mean(first_order_probability(radius, eta)))
    freq = unchanged / total
    return [
        ClaimResult("C6", setting.index, "(b) P(prediction unchanged) >= F_chi2_d(R^2/eta^2)", bound, freq, (lo, hi),
                    "violated" if hi < bound else "holds",
                    f"eta={eta:.3g} chosen so the bound is ~0.5 at the median radius; d={d}; {total} draws; "
                    f"tightness measured/bound = {freq / max(bound, 1e-300):.2f}"),
        ClaimResult("C6", setting.index, "(b) first-order prediction Phi(R/eta)", first, freq, (lo, hi),
                    "approximate" if abs(first - freq) <= 0.1 else "violated",
                    "typical-case prediction (exact for a linear boundary); rule: within 0.1"),
    ]


def _concentration(setting: Setting, oracle: Smoothed, z: torch.Tensor, nu: float, alpha: float,
                   budget: Budget, gen: torch.Generator) -> list[ClaimResult]:
    """(c) P(|pbar_y(z+eps) - E pbar_y(z+eps)| >= t) <= 2 exp(-pi t^2 nu^2 / (4 eta^2))."""
    d = setting.dim
    eta = 0.1 * nu
    outer = budget.n(300, 100)
    n_inner = budget.n(2000, 1000)
    rng = np.random.default_rng(budget.seed + 53)
    point = z[:1]
    p0, _ = oracle.estimate(point, n_inner, gen, alpha)
    y = int(p0.argmax(1)[0])
    eps = torch.from_numpy(eta * rng.standard_normal((outer, d)))
    p1, _ = oracle.estimate(point + eps, n_inner, gen, alpha)
    f = p1[:, y]
    h = 0.0 if oracle.exact else math.sqrt(math.log(4 * outer / alpha) / (2 * n_inner))
    centre = f.mean()
    checks = []
    for t in (0.1, 0.2, 0.3):
        bound = float(concentration_bound(t, nu, eta))
        confident = int(np.sum(np.abs(f - centre) >= t + 2 * h))
        observed = float(np.mean(np.abs(f - centre) >= t))
        lo, _ = clopper_pearson(confident, outer, FALSE_FAILURE / 12)
        checks.append((observed / bound, t, bound, observed, lo))
    violated = any(lo > bound for _, _, bound, _, lo in checks)
    _, t, bound, observed, lo = max(checks)
    return [ClaimResult("C6", setting.index, f"(c) P(|pbar_y - E pbar_y| >= {t}) vs concentration bound",
                        bound, observed, (lo, 1.0), "violated" if violated else "holds",
                        f"eta={eta:.3g}, nu={nu}, {outer} draws; t in 0.1, 0.2, 0.3 (shown: the tightest); "
                        f"inner Monte Carlo error {h:.3g} absorbed into the interval (lower limit of the true "
                        "frequency)")]


def _first_order_std(setting: Setting, nu: float, budget: Budget, oracle: Smoothed) -> ClaimResult:
    """(d) std of pbar_y(z+eps) - pbar_y(z) vs eta ||grad pbar_y(z)||, with common random numbers."""
    d = setting.dim
    eta = 0.05 * nu
    point = setting.z[:1]
    grad = oracle.grad_top(point)[0]
    predicted = eta * float(np.linalg.norm(grad))
    rng = np.random.default_rng(budget.seed + 59)
    outer = budget.n(300, 100)
    eps = torch.from_numpy(eta * rng.standard_normal((outer, d)))
    if oracle.exact:
        p0, _ = oracle.estimate(point, 1, torch.Generator(), FALSE_FAILURE)
        p1, _ = oracle.estimate(point + eps, 1, torch.Generator(), FALSE_FAILURE)
        y = int(p0.argmax(1)[0])
        diffs = p1[:, y] - p0[0, y]
    else:
        gen = torch.Generator().manual_seed(61)
        inner = budget.n(4000, 1500)
        noise = nu * torch.randn((inner, d), generator=gen, dtype=DTYPE)

        def pbar(points: torch.Tensor) -> np.ndarray:
            probs = torch.softmax(setting.head((points.unsqueeze(1) + noise.unsqueeze(0)).reshape(-1, d)), -1)
            return probs.view(points.shape[0], inner, -1).mean(1).numpy()

        base = pbar(point)[0]
        y = int(base.argmax())
        diffs = np.concatenate([pbar(point + eps[i : i + 50])[:, y] for i in range(0, outer, 50)]) - base[y]
    measured = float(np.std(diffs, ddof=1))
    lo = measured * math.sqrt((outer - 1) / stats.chi2.ppf(1 - FALSE_FAILURE / 2, outer - 1))
    hi = measured * math.sqrt((outer - 1) / stats.chi2.ppf(FALSE_FAILURE / 2, outer - 1))
    rel = abs(measured - predicted) / max(predicted, 1e-300)
    return ClaimResult("C6", setting.index, "(d) std of pbar_y(z+eps) - pbar_y(z), first order", predicted, measured,
                       (lo, hi), "approximate" if rel < 0.1 else "violated",
                       f"eta={eta:.3g}; relative gap {rel:.1%} (rule < 10%); common random numbers for pbar")
