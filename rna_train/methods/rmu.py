"""RMU (WMDP paper): steer forget activations at layer l to a fixed random vector ``c * u``.

``L = MSE(h^l_theta(x_F), c * u) + alpha * retain``, with ``u`` uniform in ``[0, 1)^d`` and then
normalised, one per forget topic, fixed for the run.
"""

from __future__ import annotations

import dataclasses

import torch

from rna_train import losses
from rna_train.methods import register
from rna_train.methods.base import Method, MethodOptions, Setup, unit_vector
from rna_train.schema import field
from rna_train.step import StepContext


@dataclasses.dataclass
class RMUOptions(MethodOptions):
    """RMU options (defaults: the WMDP recipe for Zephyr-7B)."""

    steering_coef: float = field(6.5, min=0, doc="c, the norm of the forget target")
    alpha: float = field(1200.0, min=0, doc="retain-loss weight")


@register
class RMU(Method):
    """Representation Misdirection for Unlearning."""

    name = "rmu"
    summary = "RMU: forget activations at layer l -> c * u, u uniform-then-normalised"
    Options = RMUOptions
    representation_only = True

    def __init__(self, options: RMUOptions, setup: Setup) -> None:
        super().__init__(options, setup)
        self.directions = [self.draw_direction(t) for t in range(len(setup.topics))]

    def draw_direction(self, topic: int) -> torch.Tensor:
        """u for topic ``topic``: uniform in [0, 1)^d, normalised."""
        return unit_vector(torch.rand(self.setup.hidden_size, generator=self.topic_generator(topic)))

    def target(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int,
               hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The forget target for ``hidden`` (``c * u``) and values to log."""
        coef = self.steering_coef(topic, self.options.steering_coef)
        u = self.directions[topic].to(device=hidden.device, dtype=hidden.dtype)
        return (coef * u).expand_as(hidden), {}

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between the layer-l forget activations and the steering target."""
        hidden = ctx.hidden(batch, self.options.layer)
        target, extra = self.target(ctx, batch, topic, hidden)
        return losses.masked_mse(hidden, target, batch["attention_mask"], ctx.tokens("forget")), extra
