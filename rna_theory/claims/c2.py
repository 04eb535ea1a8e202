"""C2 verifiers: Eq. 9 exactly (linear head), to second order (smooth heads), and where it fails."""

from __future__ import annotations

import math

import numpy as np
import torch

from rna_theory.claims import Budget, ClaimResult, claim
from rna_theory.predictions import expected_increase_mc, hessian_trace, linear_head_increase
from rna_theory.settings import Setting
from rna_theory.symbolic import derive_linear_head_increase

ETAS = (0.4, 0.2, 0.1)


@claim("C2", settings=(1,))
def linear_head_exact(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Squared loss of a linear head: E l(z+eps) - l(z) = eta^2 ||w||^2, derived and measured."""
    eta = 0.3
    rows = budget.n(64, 16)
    res = expected_increase_mc(setting.loss_fn(rows), setting.z[:rows], eta, budget.n(4000, 500),
                               seed=budget.seed)
    exact = linear_head_increase(setting.weights.numpy(), eta)
    deriv = derive_linear_head_increase(2 if budget.quick else 3)
    rng = np.random.default_rng(budget.seed)
    k = len(deriv.w)
    w, z, y = rng.standard_normal(k), rng.standard_normal(k), float(rng.standard_normal())
    symbolic = deriv.evaluate(w, z, y, eta)
    closed = eta**2 * float(np.sum(w**2))
    lo, hi = res.measured_ci
    return [
        ClaimResult("C2", 1, "E l(z+eps) - l(z), squared loss, eta=0.3", exact, res.measured, (lo, hi),
                    "holds" if lo <= exact <= hi else "violated", "predicted: eta^2 ||w||^2 (exact)"),
        ClaimResult("C2", 1, f"sympy derivation (d={k}) at random values", closed, symbolic, None,
                    "holds" if deriv.proved and math.isclose(symbolic, closed, rel_tol=1e-12) else "violated",
                    f"sympy: E increase = {deriv.increase}"),
    ]


@claim("C2", settings=(2, 3))
def second_order(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Second-order expansion and its O(eta^4) remainder; Jensen where the loss is convex."""
    rows = budget.n(64, 16)
    loss = setting.loss_fn(rows)
    z = setting.z[:rows]
    n = budget.n(3000, 400)
    scale = 1.0 if setting.index == 2 else 0.25
    out: list[ClaimResult] = []
    estimates = [expected_increase_mc(loss, z, scale * eta, n, seed=budget.seed + i)
                 for i, eta in enumerate(ETAS)]
    for est in estimates:
        lo, hi = est.measured_ci
        agree = lo <= est.predicted <= hi
        out.append(ClaimResult("C2", setting.index, f"E l(z+eps) - l(z), eta={est.eta:.3g}", est.predicted,
                               est.measured, (lo, hi), "holds" if agree else "approximate",
                               f"second order (eta^2/2) tr H; remainder {est.gap:.3g} "
                               f"[{est.gap_ci[0]:.3g}, {est.gap_ci[1]:.3g}]"))
    ratios = [a.gap / b.gap for a, b in zip(estimates, estimates[1:]) if b.gap != 0]
    resolved = all(not (e.gap_ci[0] <= 0 <= e.gap_ci[1]) for e in estimates)
    slopes = [math.log2(abs(r)) for r in ratios if r != 0]
    order_ok = resolved and all(3.0 <= s <= 5.0 for s in slopes)
    out.append(ClaimResult(
        "C2", setting.index, "remainder order: log2(gap(eta)/gap(eta/2))", 4.0,
        float(np.mean(slopes)) if slopes else None, None,
        "approximate" if order_ok else ("holds" if not resolved else "violated"),
        "O(eta^4) predicts 4; accepted in [3, 5]" if resolved
        else "remainder not resolved from zero at this sample size (agreement beyond second order)"))
    if setting.index == 2:
        worst = min(e.measured_ci[0] for e in estimates)
        out.append(ClaimResult("C2", 2, "Jensen: min lower CI of E increase (convex loss)", 0.0, worst, None,
                               "holds" if all(e.measured_ci[1] >= 0 for e in estimates) else "violated",
                               "cross-entropy of a linear head is convex in z, so the increase is >= 0"))
    else:
        out.extend(_violation(setting, budget))
    return out


def _violation(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Exhibit Eq. 9 failing: a (latent, label) pair whose Hessian trace is negative, where noise
    lowers the expected loss. Searched over retain latents and every label (a query the model
    answers wrongly, or with a different target, is a legitimate loss term)."""
    rows = budget.n(256, 96)
    z = setting.z[:rows]
    n_classes = int(setting.y.max()) + 1
    own = hessian_trace(setting.loss_fn(rows), z)
    traces = []
    for label in range(n_classes):
        y = torch.full((rows,), label, dtype=setting.y.dtype)
        traces.append(hessian_trace(lambda v, y=y: setting.loss(v, y.repeat(v.shape[0] // rows)), z))
    tr = torch.stack(traces)  # labels x rows
    frac_own = float((own < 0).double().mean())
    frac_all = float((tr < 0).double().mean())
    flat = int(torch.argmin(tr))
    label, i = divmod(flat, rows)
    zi = z[i : i + 1]
    yi = torch.tensor([label], dtype=setting.y.dtype)

    def one(v: torch.Tensor) -> torch.Tensor:
        return setting.loss(v, yi.repeat(v.shape[0]))

    eta = 0.05
    est = expected_increase_mc(one, zi, eta, budget.n(4000, 800), seed=budget.seed + 99)
    lo, hi = est.measured_ci
    return [
        ClaimResult("C2", 3, "fraction of (latent, own label) with tr H < 0", 0.0, frac_own, None,
                    "violated" if frac_own > 0 else "holds",
                    "at the model's own retain labels the loss is locally convex"),
        ClaimResult("C2", 3, "fraction of (latent, any label) with tr H < 0", 0.0, frac_all, None,
                    "violated" if frac_all > 0 else "holds",
                    "Eq. 9 needs a positive-definite Hessian; the MLP head is not convex in z"),
        ClaimResult("C2", 3, f"E l(z+eps) - l(z) at the most concave pair, eta={eta}", est.predicted,
                    est.measured, (lo, hi), "violated" if hi < 0 else "inconclusive",
                    f"tr H = {float(tr[label, i]):.3g} at retain latent {i} with label {label}: the "
                    "perturbation LOWERS the expected loss, so the paper's inequality is not unconditional"),
    ]
