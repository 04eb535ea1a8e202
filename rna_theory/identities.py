"""Claims C4 and C5: what the reference code's two RNA variants compute in expectation.

C4 (RM, noise on the frozen target): the retain loss alpha * mean((h_theta - h_frozen - delta)^2)
has gradient g(delta) = g_clean - (2 alpha / N) J^T delta, linear in delta, so E g = g_clean exactly
and Cov g = (2 alpha nu / N)^2 J^T J. The variant only adds gradient noise.
C5 (PO, noise on the reference's latent): KL(p_ref(.|z+delta) || p_theta) = -H(p_ref) - sum_y
p_ref log p_theta, so E_delta KL = const - sum_y pbar(y|z) log p_theta(y): the student is
distilled towards the noise-smoothed reference pbar = E p_ref(.|z + delta).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch.func import functional_call, jacrev
from torch.nn import functional as F

from rna_theory.errors import check_finite, check_int


def rm_retain_loss(h: torch.Tensor, target: torch.Tensor, delta: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Target-mode RM retain loss alpha * mean((h - (target + delta))^2) (delta None = clean)."""
    tgt = target if delta is None else target + delta
    return alpha * (h - tgt).pow(2).mean()


@dataclasses.dataclass
class RMGradients:
    """Clean gradient, per-draw noisy gradients and the predicted covariance (C4)."""

    clean: np.ndarray
    draws: np.ndarray
    predicted_cov: np.ndarray

    @property
    def predicted_trace(self) -> float:
        """Predicted E ||g(delta) - g_clean||^2 = tr Cov."""
        return float(np.trace(self.predicted_cov))


def rm_target_gradients(encoder: torch.nn.Module, inputs: torch.Tensor, frozen_target: torch.Tensor,
                        alpha: float, nu: float, n_draws: int, *, seed: int = 0) -> RMGradients:
    """Gradients of the target-mode RM retain loss w.r.t. the encoder's parameters over noise draws."""
    alpha = check_finite(alpha, "alpha", minimum=0.0)
    nu = check_finite(nu, "nu", minimum=0.0)
    n_draws = check_int(n_draws, "n_draws", minimum=1)
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone() for n, p in encoder.named_parameters() if n in names}

    def loss_of(p: dict[str, torch.Tensor], delta: torch.Tensor | None) -> torch.Tensor:
        return rm_retain_loss(functional_call(encoder, p, (inputs,)), frozen_target, delta, alpha)

    def flat(g: dict[str, torch.Tensor], lead: tuple[int, ...] = ()) -> np.ndarray:
        return torch.cat([g[n].reshape(*lead, -1) for n in names], dim=-1).numpy()

    gen = torch.Generator().manual_seed(seed)
    clean = flat(torch.func.grad(loss_of)(params, None))
    deltas = nu * torch.randn((n_draws, *frozen_target.shape), generator=gen, dtype=frozen_target.dtype)
    batched = torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0))(params, deltas)
    draws = flat(batched, (n_draws,))
    jac = jacrev(lambda p: functional_call(encoder, p, (inputs,)))(params)
    n_out = frozen_target.numel()
    j = torch.cat([jac[n].reshape(n_out, -1) for n in names], dim=1).numpy()
    cov = (2 * alpha * nu / n_out) ** 2 * (j.T @ j)
    return RMGradients(clean=clean, draws=draws, predicted_cov=cov)


def smoothed_probs(head: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, nu: float,
                   n_draws: int, *, seed: int = 0) -> torch.Tensor:
    """Monte Carlo pbar(.|z) = E softmax(head(z + delta)), delta ~ N(0, nu^2 I), per row of z."""
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros_like(head(z), dtype=torch.float64)
    chunk = 256
    done = 0
    while done < n_draws:
        k = min(chunk, n_draws - done)
        zz = z.unsqueeze(0) + nu * torch.randn((k, *z.shape), generator=gen, dtype=z.dtype)
        acc += torch.softmax(head(zz.reshape(-1, z.shape[-1])), -1).reshape(k, *acc.shape).sum(0)
        done += k
    return acc / n_draws


def kl_target_loss(ref_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Target-mode PO retain loss: mean over rows of KL(p_ref || p_student)."""
    return F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(ref_logits, -1), log_target=True,
                    reduction="batchmean")


def smoothed_cross_entropy(pbar: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """-sum_y pbar(y) log p_student(y), averaged over rows: C5's expected objective up to a constant."""
    return -(pbar * F.log_softmax(student_logits, -1)).sum(-1).mean()
