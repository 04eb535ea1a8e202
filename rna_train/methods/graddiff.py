"""GradDiff baseline: gradient ascent on forget text plus ``alpha * NLL`` on retain text."""

from __future__ import annotations

import dataclasses

from rna_train.methods import register
from rna_train.methods.base import RETAIN_DOC, RETAIN_LOSSES, MethodOptions
from rna_train.methods.ga import GA
from rna_train.schema import field


@dataclasses.dataclass
class GradDiffOptions(MethodOptions):
    """GradDiff options."""

    alpha: float = field(1.0, min=0, doc="retain-loss weight")
    retain_loss: str = field("nll", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class GradDiff(GA):
    """Gradient difference: -NLL(forget) + alpha * retain."""

    name = "graddiff"
    summary = "GradDiff: -NLL(forget) + alpha * NLL(retain) (baseline)"
    Options = GradDiffOptions
