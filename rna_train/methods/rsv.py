"""RSV (random steering vector): push forget activations to ``h^l_frozen(x_F) + c * u``.

``u`` is a *Gaussian* unit vector per forget topic (the reference code uses ``c = 10``).
"""

from __future__ import annotations

import dataclasses

import torch

from rna_train.methods import register
from rna_train.methods.base import MethodOptions, unit_vector
from rna_train.methods.rmu import RMU
from rna_train.schema import field
from rna_train.step import StepContext


@dataclasses.dataclass
class RSVOptions(MethodOptions):
    """RSV options."""

    steering_coef: float = field(10.0, min=0, doc="c, the length of the added random vector")
    alpha: float = field(1200.0, min=0, doc="retain-loss weight")


@register
class RSV(RMU):
    """Random steering vector added to the frozen forget activations."""

    name = "rsv"
    summary = "RSV: forget activations at layer l -> h_frozen(x_F) + c * u, u Gaussian unit vector"
    Options = RSVOptions
    forget_uses_reference = True

    def draw_direction(self, topic: int) -> torch.Tensor:
        """u for topic ``topic``: a standard Gaussian vector, normalised."""
        return unit_vector(torch.randn(self.setup.hidden_size, generator=self.topic_generator(topic)))

    def prefill_forget(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int) -> None:
        """Cache the frozen layer-l activations of ``batch``'s forget sequences."""
        ctx.store_reference_states(batch, self.options.layer)

    def target(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int,
               hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``h_frozen(x_F) + c * u``."""
        coef = self.steering_coef(topic, self.options.steering_coef)
        frozen = ctx.ref_hidden(batch, self.options.layer).to(hidden.dtype)
        u = self.directions[topic].to(device=hidden.device, dtype=hidden.dtype)
        return frozen + coef * u, {}
