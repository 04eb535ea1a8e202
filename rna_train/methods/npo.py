"""NPO: ``-(2/beta) * mean log sigmoid(beta * (NLL_theta(x_F) - NLL_ref(x_F)))``.

NLL is each forget sequence's summed token NLL (the NPO paper's convention); the reference is the
frozen copy of the original weights.
"""

from __future__ import annotations

import dataclasses

import torch

from rna_train import losses
from rna_train.config import field
from rna_train.methods import register
from rna_train.methods.base import RETAIN_DOC, RETAIN_LOSSES, Method, MethodOptions, StepContext


@dataclasses.dataclass
class NPOOptions(MethodOptions):
    """NPO options (defaults: the reference code's NPO + KL recipe)."""

    beta: float = field(0.1, gt=0, doc="inverse temperature")
    alpha: float = field(50.0, min=0, doc="retain-loss weight")
    retain_loss: str = field("kl", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class NPO(Method):
    """Negative Preference Optimization against the original model."""

    name = "npo"
    summary = "NPO: -(2/beta) log sigmoid(beta (NLL_theta - NLL_ref)) on forget sequences"
    Options = NPOOptions
    forget_uses_reference = True

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """NPO loss on the forget batch; logs the mean per-token forget NLL."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        nll, count = losses.sequence_nll(ctx.logits(batch), ids, mask)
        ref_nll = self.reference_values(
            "nll", topic, batch, lambda: losses.sequence_nll(ctx.ref_logits(batch), ids, mask)[0])
        loss = losses.npo_loss(nll, ref_nll, self.options.beta)
        return loss, {"forget_nll": float(nll.detach().sum() / count.sum().clamp_min(1))}
