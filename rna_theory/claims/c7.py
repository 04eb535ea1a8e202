"""C7 verifiers: the tuner's recommendation is exact, monotone, and predicts the measured robustness."""

from __future__ import annotations

import math

import numpy as np
import torch

from rna_theory.bounds import probit_margin
from rna_theory.claims import Budget, ClaimResult, claim
from rna_theory.claims.c6 import _oracle
from rna_theory.estimators import assumption1
from rna_theory.settings import Setting
from rna_theory.stats import FALSE_FAILURE, clopper_pearson
from rna_theory.tuner import closed_form_nu, tune

TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@claim("C7", settings=(1, 2, 3))
def tuner(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Closed-form agreement, monotonicity in the target, and predicted vs measured robustness."""
    rows: list[ClaimResult] = []
    eta, g = 0.2, 1.3
    worst = 0.0
    for criterion in ("certified", "first-order"):
        for target in TARGETS:
            got = tune(margins=[g], eta=eta, dim=setting.dim, target=target, criterion=criterion).recommended_nu
            want = closed_form_nu(eta, setting.dim, g, target, criterion)
            worst = max(worst, abs(got - want) / max(want, eta))
    rows.append(ClaimResult("C7", setting.index, "tuner vs closed form nu* (isotropic, one margin)", 0.0, worst, None,
                            "holds" if worst < 1e-8 else "violated",
                            f"max relative difference over targets {TARGETS} and both criteria; d={setting.dim}"))
    rng = np.random.default_rng(budget.seed + 71)
    margins = np.abs(rng.normal(1.0, 0.5, 64)) + 0.05
    recs = [tune(margins=margins, eta=eta, dim=setting.dim, target=t).recommended_nu for t in TARGETS]
    monotone = all(b >= a for a, b in zip(recs, recs[1:]))
    rows.append(ClaimResult("C7", setting.index, "recommended nu non-decreasing in the target", 1.0, float(monotone),
                            None, "holds" if monotone else "violated",
                            "nu* per target: " + ", ".join(f"{r:.3g}" for r in recs)))
    rows.extend(_predicted_vs_measured(setting, budget))
    return rows


def _perturbed_pairs(setting: Setting, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if setting.index == 3:
        clean, pert = setting.perturb(n, 1.0, seed)
        return clean, pert, "real input trigger (Assumption 1 measured, not imposed)"
    clean, pert = setting.perturb(n, 0.3, seed)
    return clean, pert, "Gaussian eps with eta = 0.3 (Assumption 1 holds)"


def _predicted_vs_measured(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Tune from measured eta and margins (two rounds: pilot nu, then nu*), then measure robustness."""
    n = budget.n(96, 32)
    n_inner = budget.n(2000, 800)
    clean, pert, how = _perturbed_pairs(setting, n, budget.seed + 73)
    est = assumption1(clean.numpy(), pert.numpy())
    gen = torch.Generator().manual_seed(budget.seed + 79)
    target = 0.9
    nu = 0.1 if setting.index != 3 else 0.05
    result = None
    for _ in range(2):
        oracle = _oracle(setting, nu)
        p, _ = oracle.estimate(clean, n_inner, gen, FALSE_FAILURE)
        top2 = np.sort(p, axis=1)[:, ::-1]
        margins = probit_margin(top2[:, 0], top2[:, 1])
        result = tune(margins=margins, eta=est.eta, dim=est.dim, target=target, criterion="first-order")
        if result.recommended_nu is None:
            break
        nu = result.recommended_nu
    if result is None or result.recommended_nu is None:
        return [ClaimResult("C7", setting.index, "predicted vs measured robustness at nu*", target, None, None,
                            "inconclusive", result.note if result else "tuning failed")]
    oracle = _oracle(setting, nu)
    p_clean, _ = oracle.estimate(clean, n_inner, gen, FALSE_FAILURE)
    p_pert, _ = oracle.estimate(pert, n_inner, gen, FALSE_FAILURE)
    same = int(np.sum(p_clean.argmax(1) == p_pert.argmax(1)))
    lo, hi = clopper_pearson(same, n)
    measured = same / n
    row = next(r for r in tune(margins=margins, eta=est.eta, dim=est.dim, nus=[nu]).rows)
    shift = est.mean_norm / (est.eta * math.sqrt(est.dim))
    predicted = row.first_order
    verdict = "approximate" if lo - 0.05 <= predicted <= hi + 0.05 else "violated"
    return [
        ClaimResult("C7", setting.index, f"first-order robustness at tuned nu*={nu:.3g} (target {target})",
                    predicted, measured, (lo, hi), verdict,
                    f"{how}; eta={est.eta:.3g}, ||mu||={est.mean_norm:.3g}; margins re-measured at nu*; "
                    "rule: prediction within the interval +- 0.05"),
        ClaimResult("C7", setting.index, f"certified robustness at nu*={nu:.3g}", row.certified, measured, (lo, hi),
                    "holds" if hi >= row.certified else "violated",
                    "rigorous lower bound under Assumption 1 (chi-square); holds when measured >= bound"
                    + ("" if setting.index != 3 else f"; the trigger's mean shift makes it a test of robustness "
                       f"to Assumption 1's failure (||mu||/eta sqrt d = {shift:.2f})")),
    ]
