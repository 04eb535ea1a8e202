"""NPO: ``-(2/beta) * mean log sigmoid(beta * (NLL_theta(x_F) - NLL_ref(x_F)))``.

``nll_reduction`` says what NLL is: ``sum`` (default) is each forget sequence's summed token NLL, the
NPO paper's convention, one term per sequence; ``batch_mean`` is the reference code's: the token-mean
NLL of the whole forget batch, one term per batch. At step 1 the sum's gradient is (tokens - 1)
times the batch mean's per sequence, so recipes tuned for one do not transfer to the other
(experiments/configs/zephyr_npo*.yaml reproduce the reference and use ``batch_mean``). The
reference is the frozen copy of the original weights.
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
class NPOOptions(MethodOptions):
    """NPO options (defaults: the reference code's NPO + KL recipe)."""

    beta: float = field(0.1, gt=0, doc="inverse temperature")
    nll_reduction: str = field("sum", choices=("sum", "batch_mean"),
                               doc="sum: per-sequence summed NLL (NPO paper); batch_mean: the forget batch's "
                                   "token-mean NLL (the reference code)")
    alpha: float = field(50.0, min=0, doc="retain-loss weight")
    retain_loss: str = field("kl", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class NPO(Method):
    """Negative Preference Optimization against the original model."""

    name = "npo"
    summary = "NPO: -(2/beta) log sigmoid(beta (NLL_theta - NLL_ref)) on forget sequences"
    Options = NPOOptions
    forget_uses_reference = True

    def reference_nll(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each forget sequence's summed NLL under the reference (cached per sequence)."""
        return self.reference_values(ctx, "nll", batch, lambda: ctx.ref_sequence_nll(batch))

    def prefill_forget(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int) -> None:
        """Cache the reference NLL of ``batch``'s forget sequences."""
        self.reference_nll(ctx, batch)

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """NPO loss on the forget batch; logs the mean per-token forget NLL."""
        nll, count = ctx.sequence_nll(batch)
        ref = self.reference_nll(ctx, batch)
        if self.options.nll_reduction == "batch_mean":
            tokens = count.sum().clamp_min(1)
            nll, ref = (nll.sum() / tokens).reshape(1), (ref.sum() / tokens).reshape(1)
        loss = losses.npo_loss(nll, ref, self.options.beta)
        return loss, {"forget_nll": float(nll.detach().sum() / count.sum().clamp_min(1))
                      if self.options.nll_reduction == "sum" else float(nll.detach()[0])}
