"""Adaptive RMU (arXiv 2408.06223): RMU with ``c = beta * mean token norm of h^l_frozen(x_F)``.

The coefficient follows the frozen model's activation scale per batch, so deeper layers (larger
norms) get a proportionally larger steering coefficient.
"""

from __future__ import annotations

import dataclasses

import torch

from rna_train import losses
from rna_train.methods import register
from rna_train.methods.base import MethodOptions
from rna_train.methods.rmu import RMU
from rna_train.schema import field
from rna_train.step import StepContext


@dataclasses.dataclass
class AdaptiveRMUOptions(MethodOptions):
    """Adaptive RMU options."""

    beta: float = field(5.0, gt=0, doc="scale: c = beta * mean ||h_frozen(x_F)|| (paper: 3-5)")
    alpha: float = field(1200.0, min=0, doc="retain-loss weight")


@register
class AdaptiveRMU(RMU):
    """RMU whose steering coefficient adapts to the frozen activations' norm."""

    name = "adaptive_rmu"
    summary = "Adaptive RMU: RMU with c = beta * mean token norm of h_frozen(x_F)"
    Options = AdaptiveRMUOptions
    forget_uses_reference = True

    def norm_sums(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sequence, the sum over real tokens of ``||h_frozen||`` at layer l (cached per sequence)."""
        return self.reference_values(ctx, "norm", batch, lambda: losses.token_norms(
            ctx.ref_hidden(batch, self.options.layer), batch["attention_mask"]).sum(-1))

    def prefill_forget(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int) -> None:
        """Cache the activation-norm sums of ``batch``'s forget sequences."""
        self.norm_sums(ctx, batch)

    def target(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int,
               hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``beta * ||h_frozen|| * u`` with the norm averaged over the batch's real tokens."""
        mask = batch["attention_mask"]
        sums = self.norm_sums(ctx, batch)
        coef = self.options.beta * sums.sum() / mask.sum().clamp_min(1)
        u = self.directions[topic].to(device=hidden.device, dtype=hidden.dtype)
        return (coef.to(hidden.dtype) * u).expand_as(hidden), {"coef": float(coef)}
