"""SimNPO: ``-(2/beta) * mean log sigmoid(beta * (NLL_theta(x_F) / |y| - gamma))``, no reference.

``NLL / |y|`` is each sequence's length-normalised NLL; the paper uses ``gamma = 0``.
"""

from __future__ import annotations

import dataclasses

import torch

from rna_train import losses
from rna_train.methods import register
from rna_train.methods.base import RETAIN_DOC, RETAIN_LOSSES, Method, MethodOptions
from rna_train.schema import field
from rna_train.step import StepContext


@dataclasses.dataclass
class SimNPOOptions(MethodOptions):
    """SimNPO options."""

    beta: float = field(0.1, gt=0, doc="inverse temperature")
    gamma: float = field(0.0, doc="reward margin")
    alpha: float = field(50.0, min=0, doc="retain-loss weight")
    retain_loss: str = field("kl", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class SimNPO(Method):
    """Simple NPO: length-normalised, reference-free."""

    name = "simnpo"
    summary = "SimNPO: -(2/beta) log sigmoid(beta (NLL_theta/|y| - gamma)), no reference model"
    Options = SimNPOOptions

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """SimNPO loss on the forget batch; logs the mean per-token forget NLL."""
        nll, count = ctx.sequence_nll(batch)
        loss = losses.simnpo_loss(nll, count, self.options.beta, self.options.gamma)
        return loss, {"forget_nll": float(nll.detach().sum() / count.sum().clamp_min(1))}
