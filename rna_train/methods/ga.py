"""Gradient Ascent baseline: maximise the forget NLL (minimise ``-NLL(x_F)``), no retain term."""

from __future__ import annotations

import dataclasses

import torch

from rna_train.methods import register
from rna_train.methods.base import RETAIN_DOC, RETAIN_LOSSES, Method, MethodOptions
from rna_train.schema import field
from rna_train.step import StepContext


@dataclasses.dataclass
class GAOptions(MethodOptions):
    """GA options: no retain loss by default."""

    alpha: float = field(0.0, min=0, doc="retain-loss weight (used only with a retain_loss)")
    retain_loss: str = field("none", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class GA(Method):
    """Gradient ascent on the forget corpus."""

    name = "ga"
    summary = "GA: minimise -NLL on forget text (baseline)"
    Options = GAOptions

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative token-mean NLL of the forget batch."""
        nll = ctx.mean_nll(batch, ctx.pairs("forget"))
        return -nll, {"forget_nll": float(nll.detach())}
