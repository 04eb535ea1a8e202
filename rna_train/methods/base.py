"""What every method shares: options, the per-step context, retain losses with RNA, the total loss.

A method only says how its *forget* loss is computed (:meth:`Method.forget_loss`); the retain
term (representation MSE at layer l, KL, log-softmax MSE or NLL), RNA, per-topic weights and the
combination ``weight * forget + alpha * retain`` are implemented once here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from rna_theory.errors import RNAError
from rna_train import arch, losses
from rna_train.config import TopicConfig, field
from rna_train.models import (
    forward_with,
    head_input,
    layer_output,
    output_hidden,
    prefix_output,
    replay_prefix,
)
from rna_train.refcache import ReferenceCache
from rna_train.rna import RNA, step_seed

RETAIN_LOSSES = ("rm", "kl", "mse", "nll", "none")
#: Most chunks a next-token loss is split into (``train.head_chunk_mib`` is exceeded rather than this).
MAX_HEAD_CHUNKS = 4
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


@dataclasses.dataclass(frozen=True)
class Counts:
    """Real tokens and real next-token pairs per micro-batch, averaged over the global batch."""

    tokens: float
    pairs: float


@dataclasses.dataclass
class StepContext:
    """The models and per-step state a loss computation needs.

    ``forward`` is the callable for the updated model's forward (its distributed wrapper when
    there is one); ``model`` is the unwrapped module, used to find layers for hooks.
    """

    model: nn.Module
    forward: Callable[..., Any]
    reference: nn.Module | None
    rna: RNA
    step: int
    generator: torch.Generator | None = None
    truncate: bool = True
    #: ``forget`` / ``retain`` -> global-batch counts for token means (empty: each batch's own).
    counts: dict[str, Counts] = dataclasses.field(default_factory=dict)
    #: Original values of the trainable parameters. With ``reference=None`` the frozen reference
    #: is ``model`` with these swapped in (no second copy of the weights).
    originals: dict[str, torch.Tensor] | None = None
    #: Number of leading decoder layers without trainable parameters whose output is computed once
    #: per batch (no gradient) and shared by the updated and the reference forwards (0: off).
    shared_layers: int = 0
    #: Reference outputs computed before training (:mod:`rna_train.refcache`); None: none.
    cache: ReferenceCache | None = None
    #: Largest float32 logits block (bytes) the next-token losses hold at once: the output head is
    #: applied a chunk of positions at a time, each chunk's gradient taken at once (0: full logits).
    head_chunk_bytes: int = 0
    _prefix: dict[int, tuple[torch.Tensor, Any]] = dataclasses.field(default_factory=dict, repr=False)

    def tokens(self, corpus: str) -> float | None:
        """Denominator for token means over ``corpus`` (None: the batch's own count)."""
        c = self.counts.get(corpus)
        return None if c is None else c.tokens

    def pairs(self, corpus: str) -> float | None:
        """Denominator for next-token means over ``corpus`` (None: the batch's own count)."""
        c = self.counts.get(corpus)
        return None if c is None else c.pairs

    def shared_prefix(self, batch: dict[str, torch.Tensor]) -> contextlib.AbstractContextManager[None]:
        """Context in which ``model``'s first ``shared_layers`` layers replay ``batch``'s cached output.

        The output comes from the reference cache when it holds it, else it is computed on first
        use for a batch (without gradient: nothing below the first trainable layer needs one) and
        reused by every later forward on the same batch in this step, for the updated and the
        swapped-in original weights alike.
        """
        if not self.shared_layers or not self.truncate:
            return contextlib.nullcontext()
        ids = batch["input_ids"]
        hit = self._prefix.get(id(ids))
        if hit is None or hit[0] is not ids:
            cached = self.cache.output(batch, self.shared_layers - 1) if self.cache is not None else None
            if cached is None:
                cached = prefix_output(self.model, self.shared_layers, ids, batch["attention_mask"])
            hit = (ids, cached)
            self._prefix[id(ids)] = hit
        return replay_prefix(self.model, self.shared_layers, hit[1])

    def hidden(self, batch: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        """Updated model's layer-``layer`` output on ``batch`` (with gradients)."""
        with self.shared_prefix(batch):
            return layer_output(self.model, layer, batch["input_ids"], batch["attention_mask"],
                                forward=self.forward, truncate=self.truncate)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Updated model's next-token logits on ``batch``."""
        with self.shared_prefix(batch):
            return self.forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                use_cache=False).logits

    def output_head(self) -> losses.Head | None:
        """The output head for chunked losses, or None: full logits from the model's forward.

        Needs a forward that may stop before the head (not a distributed wrapper), a frozen head
        and a family whose logits are the head's output (:func:`rna_train.arch.logits_head`).
        """
        if not self.head_chunk_bytes or not self.truncate:
            return None
        head = self.model.get_output_embeddings()
        if head is None or any(p.requires_grad for p in head.parameters()):
            return None
        return arch.logits_head(self.model)

    def head_chunk(self, batch: dict[str, torch.Tensor]) -> int:
        """Positions per chunk: a chunk's float32 logits stay within ``head_chunk_bytes``, in at most
        :data:`MAX_HEAD_CHUNKS` chunks (each chunk costs kernel launches and an autograd call)."""
        rows, positions = batch["input_ids"].shape
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        return max(1, self.head_chunk_bytes // (rows * vocab * 4), -(-positions // MAX_HEAD_CHUNKS))

    def head_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Updated model's states entering the output head on ``batch`` (with gradients)."""
        with self.shared_prefix(batch):
            return head_input(self.model, batch["input_ids"], batch["attention_mask"], forward=self.forward)

    @torch.no_grad()
    def ref_head_states(self, batch: dict[str, torch.Tensor], *, noisy: bool = False) -> torch.Tensor:
        """Frozen model's states entering the output head; ``noisy``: with target-mode RNA."""
        upto = self.reference_layer(None, noisy)
        with self._reference_inputs(batch, upto), self._noise(noisy, batch):
            return head_input(self.require_reference(), batch["input_ids"], batch["attention_mask"],
                              forward=self._reference_forward())

    def sequence_nll(self, batch: dict[str, torch.Tensor], label_mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated model's per-sequence summed NLL and scored-token counts (:func:`losses.sequence_nll`)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        head = self.output_head()
        if head is None:
            return losses.sequence_nll(self.logits(batch), ids, mask, label_mask)
        return losses.head_sequence_nll(self.head_states(batch), head, ids, mask, label_mask,
                                        chunk=self.head_chunk(batch))

    @torch.no_grad()
    def ref_sequence_nll(self, batch: dict[str, torch.Tensor], label_mask: torch.Tensor | None = None,
                         ) -> torch.Tensor:
        """Frozen model's per-sequence summed NLL."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        head = self.output_head()
        if head is None:
            return losses.sequence_nll(self.ref_logits(batch), ids, mask, label_mask)[0]
        return losses.head_sequence_nll(self.ref_head_states(batch), head, ids, mask, label_mask,
                                        chunk=self.head_chunk(batch))[0]

    def mean_nll(self, batch: dict[str, torch.Tensor], pairs: float | None) -> torch.Tensor:
        """Updated model's token-mean NLL (:func:`losses.mean_nll`)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        head = self.output_head()
        if head is None:
            return losses.mean_nll(self.logits(batch), ids, mask, pairs)
        return losses.head_mean_nll(self.head_states(batch), head, ids, mask, pairs, chunk=self.head_chunk(batch))

    def require_reference(self) -> nn.Module:
        """The module the frozen reference runs on (RNA's target-mode hooks go there).

        A separate frozen copy when there is one, else the updated model itself, run with the
        original values swapped in.
        """
        if self.reference is not None:
            return self.reference
        if self.originals is None:
            raise RuntimeError("this method was built without a reference model")
        return self.model

    def _reference_forward(self) -> Callable[..., Any]:
        if self.reference is not None:
            return self.reference
        assert self.originals is not None  # require_reference checked it
        return forward_with(self.model, self.originals)

    def _target_noise(self) -> bool:
        return self.rna.active and self.rna.mode == "target"

    def reference_layer(self, top: int | None, noisy: bool) -> int:
        """The reference layer whose output is cached for a loss reading layer ``top`` (None: logits).

        With target-mode RNA the cached output is that of RNA's layer, where each step's noise
        enters; the layers above it are computed every step.
        """
        if noisy and self._target_noise():
            return self.rna.layer
        return top if top is not None else arch.num_layers(self.require_reference()) - 1

    def _reference_inputs(self, batch: dict[str, torch.Tensor], upto: int) -> contextlib.AbstractContextManager[None]:
        """Replay of the reference's layers ``0..k`` for the highest cached ``k <= upto``, else the shared prefix."""
        if self.cache is not None:
            for k in reversed(self.cache.stored_layers()):
                if k <= upto and (output := self.cache.output(batch, k)) is not None:
                    return replay_prefix(self.require_reference(), k + 1, output)
        if self.reference is None:
            return self.shared_prefix(batch)
        return contextlib.nullcontext()

    def _noise(self, noisy: bool, batch: dict[str, torch.Tensor]) -> contextlib.AbstractContextManager[None]:
        """Target-mode RNA noise on the reference's layer output (entered after any replay)."""
        if not noisy:
            return contextlib.nullcontext()
        return self.rna.perturb("target", self.require_reference(), batch["attention_mask"], self.step,
                                self.generator)

    @torch.no_grad()
    def ref_hidden(self, batch: dict[str, torch.Tensor], layer: int, *, noisy: bool = False) -> torch.Tensor:
        """Frozen (original-weights) model's layer-``layer`` output; ``noisy``: with target-mode RNA."""
        upto = self.reference_layer(layer, noisy)
        if upto == layer and self.cache is not None:
            cached = self.cache.output(batch, layer)
            if cached is not None:  # the noise, if any, enters at this very layer: no forward needed
                hidden = output_hidden(cached)
                if noisy and self._target_noise():
                    return self.rna.add_noise(hidden, batch["attention_mask"], self.step, self.generator)
                return hidden
        ref = self.require_reference()
        with self._reference_inputs(batch, upto), self._noise(noisy, batch):
            return layer_output(ref, layer, batch["input_ids"], batch["attention_mask"],
                                forward=self._reference_forward(), truncate=True)

    @torch.no_grad()
    def ref_logits(self, batch: dict[str, torch.Tensor], *, noisy: bool = False) -> torch.Tensor:
        """Frozen (original-weights) model's logits; ``noisy``: with target-mode RNA."""
        upto = self.reference_layer(None, noisy)
        with self._reference_inputs(batch, upto), self._noise(noisy, batch):
            return self._reference_forward()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                             use_cache=False).logits

    @torch.no_grad()
    def store_reference_states(self, batch: dict[str, torch.Tensor], layer: int) -> None:
        """Compute the reference's clean layer-``layer`` output on ``batch`` and cache it (no-op without a cache).

        Below ``shared_layers`` the updated model's own weights are the reference's, so methods
        without a reference can cache the shared prefix too.
        """
        if self.cache is None or not self.cache.accepts(layer) or self.cache.has_states(batch, layer):
            return
        if layer < self.shared_layers:
            model, forward, inputs = self.model, self.model, contextlib.nullcontext()
        else:
            model, forward = self.require_reference(), self._reference_forward()
            inputs = self._reference_inputs(batch, layer - 1)
        with inputs:
            output = prefix_output(model, layer + 1, batch["input_ids"], batch["attention_mask"], forward=forward)
        self.cache.put(batch, layer, output)


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
        if rna.mode == "off":
            return
        retain = self.options.retain_loss
        if retain == "none":
            raise RNAError(f"RNA perturbs the retain step but {self.name} has no retain loss",
                           where="rna.mode", fix="set rna.mode: off or choose a retain_loss")
        if rna.mode == "target" and retain == "nll":
            raise RNAError("target-mode RNA perturbs the reference model, which the nll retain loss "
                           "does not use", where="rna.mode",
                           fix="use rna.mode: input, or retain_loss: kl / mse / rm")
        arch.check_layer(model, rna.layer, "rna.layer")
        if retain == "rm" and rna.layer > self.options.layer:
            raise RNAError(f"noise after layer {rna.layer} cannot reach the layer-{self.options.layer} "
                           "retain loss", where="rna.layer", fix=f"use rna.layer <= {self.options.layer}")

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


def retain_term(ctx: StepContext, batch: dict[str, torch.Tensor], kind: str, layer: int) -> torch.Tensor:
    """Retain loss ``kind`` on ``batch`` with RNA.

    ``target`` noise goes into the frozen model's forward (its layer-k output), ``input`` noise
    into the updated model's; the other forward is clean. Padding never counts.
    """
    mask = batch["attention_mask"]
    if kind == "rm":
        target = ctx.ref_hidden(batch, layer, noisy=True)
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator):
            hidden = ctx.hidden(batch, layer)
        return losses.masked_mse(hidden, target, mask, ctx.tokens("retain"))
    if kind in ("kl", "mse"):
        head = ctx.output_head()
        if head is not None:
            ref_states = ctx.ref_head_states(batch, noisy=True)
            with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator):
                states = ctx.head_states(batch)
            term = losses.head_kl_ref_theta if kind == "kl" else losses.head_logsoftmax_mse
            return term(states, ref_states, head, mask, ctx.tokens("retain"), chunk=ctx.head_chunk(batch))
        ref_logits = ctx.ref_logits(batch, noisy=True)
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator):
            logits = ctx.logits(batch)
        if kind == "kl":
            return losses.kl_ref_theta(logits, ref_logits, mask, ctx.tokens("retain"))
        return losses.logsoftmax_mse(logits, ref_logits, mask, ctx.tokens("retain"))
    if kind == "nll":
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator):
            return ctx.mean_nll(batch, ctx.pairs("retain"))
    raise RNAError(f"unknown retain loss {kind!r}", where="method.retain_loss",
                   fix=f"use one of {', '.join(RETAIN_LOSSES)}")


def unit_vector(vector: torch.Tensor) -> torch.Tensor:
    """``vector / ||vector||``."""
    return vector / vector.norm()
