"""Predicted (C6/C7) vs. measured robustness of a checkpoint to forget-keyword perturbations.

Measured: the fraction of retain questions whose prediction is unchanged when a keyword is
inserted or substituted, and the perturbed accuracy. Predicted, from the checkpoint's measured
perturbation scale eta (C1, latent audit) and its retain margins: for RNA noise std nu, each query
has certified radius R_i = nu * g_i with probit margin g_i = (Phi^-1(p_A) - Phi^-1(p_B))/2, and

* ``certified`` = mean_i F_chi2_d(R_i^2 / eta^2) (C6b, a lower bound under Assumption 1),
* ``first_order`` = mean_i Phi(R_i / eta) (the typical-case, linear-boundary prediction).

Both treat the checkpoint's own choice probabilities as those of the noise-smoothed head, which is
what RNA training distils towards (C5); this is an approximation that the report puts next to the
measurement rather than assumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rna_theory.errors import check_finite

#: Clip for choice probabilities before the probit (the npz contract: [1e-6, 1 - 1e-6]).
P_CLIP = 1e-6


def probit_margins(choice_probabilities: Sequence[Sequence[float]]) -> np.ndarray:
    """Per question (Phi^-1(p_A) - Phi^-1(p_B))/2 of its top-two choice probabilities.

    ``choice_probabilities`` are normalised over the choices; each is clipped to
    [1e-6, 1 - 1e-6] before the probit.
    """
    from rna_theory.bounds import probit_margin

    top = np.array([sorted(p, reverse=True)[:2] for p in choice_probabilities], dtype=np.float64)
    top = np.clip(top, P_CLIP, 1 - P_CLIP)
    return np.asarray(probit_margin(top[:, 0], top[:, 1]), dtype=np.float64)


def predicted_robustness(margins: np.ndarray, eta: float, dim: int, nu: float) -> dict[str, float]:
    """Mean certified (C6b) and first-order probabilities of an unchanged prediction at noise ``nu``."""
    from rna_theory.bounds import certified_probability, first_order_probability

    nu = check_finite(nu, "nu", minimum=0.0)
    radius = nu * np.maximum(np.asarray(margins, dtype=np.float64), 0.0)
    return {"nu": nu, "eta": float(eta), "dim": int(dim),
            "certified": float(np.mean(certified_probability(radius, eta, dim))),
            "first_order": float(np.mean(first_order_probability(radius, eta)))}


def prediction_curve(margins: np.ndarray, eta: float, dim: int,
                     nus: Sequence[float]) -> list[dict[str, float]]:
    """:func:`predicted_robustness` over a grid of ``nus`` (for the report's curves)."""
    return [predicted_robustness(margins, eta, dim, nu) for nu in nus]


def default_nu_grid(eta: float, rms: float | None = None, points: int = 25) -> list[float]:
    """Log-spaced noise stds around the perturbation scale (1e-3 .. 100 times eta, or rms)."""
    scale = eta if eta > 0 else (rms or 1.0)
    return [float(v) for v in np.geomspace(1e-3 * scale, 100.0 * scale, points)]


def measured_robustness(clean_pred: Sequence[int], perturbed_pred: Sequence[int], answers: Sequence[int],
                        **ci: Any) -> dict[str, Any]:
    """Unchanged-prediction rate, clean and perturbed accuracy, each with a binomial interval."""
    from rna_train.eval.metrics import rate

    n = len(answers)
    unchanged = sum(int(a == b) for a, b in zip(clean_pred, perturbed_pred, strict=True))
    clean_ok = sum(int(p == y) for p, y in zip(clean_pred, answers, strict=True))
    pert_ok = sum(int(p == y) for p, y in zip(perturbed_pred, answers, strict=True))
    return {"unchanged": rate(unchanged, n, **ci), "clean_accuracy": rate(clean_ok, n, **ci),
            "perturbed_accuracy": rate(pert_ok, n, **ci),
            "accuracy_drop": (clean_ok - pert_ok) / n if n else float("nan")}
