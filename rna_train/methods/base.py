"""What every method shares: options, the per-step context, retain losses with RNA, the total loss.

A method only says how its *forget* loss is computed (:meth:`Method.forget_loss`); the retain
term (representation MSE at layer l, KL, log-softmax MSE or NLL), RNA, per-topic weights and the
combination ``weight * forget + alpha * retain`` are implemented once here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from rna_theory.errors import RNAError
from rna_train import arch
from rna_train.rna import RNA, step_seed
from rna_train.schema import field
from rna_train.step import RETAIN_LOSSES, StepContext, retain_term

if TYPE_CHECKING:
    from rna_train.config import TopicConfig

RETAIN_DOC = ("rm: MSE of layer-l hidden states; kl: KL(ref||theta); mse: log-softmax MSE; nll: plain NLL; "
              "none: no retain term")


@dataclasses.dataclass
class MethodOptions:
    """Options every method has."""

    layer: int = field(7, min=0, doc="layer l: RM losses are taken on its output; layers l-2..l "
                       "are updated unless model.trainable.layers says otherwise")
    alpha: float = field(1.0, min=0, doc="retain-loss weight (a topic's alpha overrides it)")
    retain_loss: str = field("rm", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@dataclasses.dataclass
class Setup:
    """What a method may need when it is built (all known before training starts)."""

    hidden_size: int
    topics: Sequence[TopicConfig]
    seed: int
    tokenizer: Any


class Method:
    """Base class: subclasses set ``name``, ``summary``, ``Options`` and define ``forget_loss``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    #: True when the forget loss itself reads the frozen model (RSV, Adaptive RMU, NPO, DPO).
    forget_uses_reference: ClassVar[bool] = False
    #: True when the forget loss reads nothing above layer l (RMU, Adaptive RMU, RSV).
    representation_only: ClassVar[bool] = False

    def __init__(self, options: MethodOptions, setup: Setup) -> None:
        self.options = options
        self.setup = setup

    @staticmethod
    def reference_values(ctx: StepContext, name: str, batch: dict[str, torch.Tensor],
                         compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Per-sequence values ``name`` of the frozen reference (shape: rows of ``batch``).

        The reference never changes and forget losses see no noise, so a value such as a forget
        sequence's reference NLL is fixed: with a reference cache it is computed once (in the
        pass before training, or on the sequence's first visit) and looked up afterwards.
        """
        if ctx.cache is None:
            return compute()
        return ctx.cache.values(name, batch, compute)

    def prefill_forget(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int) -> None:
        """Compute what :meth:`forget_loss` reads from the reference on ``batch`` into ``ctx.cache``.

        Runs in the pass before training; methods whose forget loss reads the reference override it.
        """

    def prefill_retain(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> None:
        """Cache the reference output the retain term resumes from on ``batch`` (before training)."""
        kind = self.options.retain_loss
        if kind == "rm":
            ctx.store_reference_states(batch, ctx.reference_layer(self.options.layer, noisy=True))
        elif kind in ("kl", "mse"):
            ctx.store_reference_states(batch, ctx.reference_layer(None, noisy=True))

    @classmethod
    def uses_retain(cls, options: MethodOptions) -> bool:
        """Whether the method has a retain term (GA does not)."""
        return options.retain_loss != "none"

    @classmethod
    def top_layer(cls, options: MethodOptions) -> int | None:
        """Highest decoder layer any loss reads, or None when the output distribution is needed.

        Layers above it (and the output head) are never computed, so they need not be loaded.
        """
        if cls.representation_only and options.retain_loss in ("rm", "none"):
            return options.layer
        return None

    def needs_reference(self) -> bool:
        """Whether a frozen copy of the original model must be kept."""
        return self.forget_uses_reference or self.options.retain_loss in ("rm", "kl", "mse")

    def validate(self, model: nn.Module, rna: RNA) -> None:
        """Check the options against the model and RNA settings before training (RNAError)."""
        arch.check_layer(model, self.options.layer, "method.layer")
        self.check_rna(self.options, rna.mode, rna.layer)
        if rna.mode != "off":
            arch.check_layer(model, rna.layer, "rna.layer")

    @classmethod
    def check_rna(cls, options: MethodOptions, mode: str, layer: int) -> None:
        """The RNA settings this method can honour, checked without a model (at config load)."""
        if mode == "off":
            return
        retain = options.retain_loss
        if retain == "none":
            raise RNAError(f"RNA perturbs the retain step but {cls.name} has no retain loss",
                           where="rna.mode", fix="set rna.mode: off or choose a retain_loss")
        if mode == "target" and retain == "nll":
            raise RNAError("target-mode RNA perturbs the reference model, which the nll retain loss "
                           "does not use", where="rna.mode",
                           fix="use rna.mode: input, or retain_loss: kl / mse / rm")
        if retain == "rm" and layer > options.layer:
            raise RNAError(f"noise after layer {layer} cannot reach the layer-{options.layer} "
                           "retain loss", where="rna.layer", fix=f"use rna.layer <= {options.layer}")

    def default_layers(self) -> list[int]:
        """Decoder layers updated by default: l-2, l-1, l (as in the reference recipes)."""
        top = self.options.layer
        return [i for i in (top - 2, top - 1, top) if i >= 0]

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The forget term on ``batch`` of forget topic ``topic`` and extra values to log."""
        raise NotImplementedError

    def retain_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured retain term, with RNA applied where the config puts it."""
        return retain_term(ctx, batch, self.options.retain_loss, self.options.layer)

    def loss(self, ctx: StepContext, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor] | None,
             topic: int, backward: Callable[[torch.Tensor], None] | None = None,
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss ``weight_t * forget + alpha_t * retain`` and every term for the metrics.

        With ``backward``, each weighted term is passed to it as soon as it is computed (the
        forget graph is freed before the retain forward runs: peak activation memory is the larger
        term's, not their sum) and the returned total is detached; the accumulated gradient is the
        total's. Without it, the caller differentiates the returned total.
        """
        spec = self.setup.topics[topic]
        forget_value, terms = self.forget_loss(ctx, forget, topic)
        total = spec.weight * forget_value
        terms = {"forget": float(forget_value.detach()), **terms}
        if backward is not None:
            backward(total)
            total = total.detach()
        if retain is not None and self.uses_retain(self.options):
            alpha = self.options.alpha if spec.alpha is None else spec.alpha
            retain_value = self.retain_loss(ctx, retain)
            if backward is not None:
                backward(alpha * retain_value)
                retain_value = retain_value.detach()
            total = total + alpha * retain_value
            terms["retain"] = float(retain_value.detach())
        terms["loss"] = float(total.detach())
        return total, terms

    def steering_coef(self, topic: int, default: float) -> float:
        """Topic ``topic``'s steering coefficient c (its own, or the method default)."""
        own = self.setup.topics[topic].steering_coef
        return default if own is None else own

    def topic_generator(self, topic: int) -> torch.Generator:
        """A CPU generator for topic ``topic``'s fixed random vector, seeded from the run seed."""
        return torch.Generator().manual_seed(step_seed(self.setup.seed, 0, 0, salt=1000 + topic))


def unit_vector(vector: torch.Tensor) -> torch.Tensor:
    """``vector / ||vector||``."""
    return vector / vector.norm()
