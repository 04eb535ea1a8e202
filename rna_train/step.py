"""One training step, owned by one module: the step context, every RNA placement, the reference pass.

* :class:`StepContext`: the models and per-step state a loss computation reads (updated and
  reference forwards, shared-prefix replay, chunked output head, the reference cache);
* :func:`retain_term`: the retain losses with RNA in each of its placements (``target``: noise in
  the frozen model's forward; ``input``: in the updated model's), for RM and PO methods alike;
* :func:`prefill`: the reference pass before step 1 that fills :class:`~rna_train.refcache.ReferenceCache`;
* :class:`TrainStep`: the entry point the trainer, the benchmark and the tests call,
  ``step(step, topic, forget, retain) -> losses`` (forward and backward over a step's micro-batches).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rna_theory.errors import RNAError
from rna_train import arch, losses, sharded
from rna_train.models import (
    forward_with,
    head_input,
    layer_output,
    output_hidden,
    prefix_output,
    replay_prefix,
)
from rna_train.refcache import ReferenceCache
from rna_train.rna import RNA

if TYPE_CHECKING:
    from rna_train.methods.base import Method

Batch = dict[str, torch.Tensor]
RETAIN_LOSSES = ("rm", "kl", "mse", "nll", "none")
#: Most chunks a next-token loss is split into (``train.head_chunk_mib`` is exceeded rather than this).
MAX_HEAD_CHUNKS = 4


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
    #: The model is FSDP2-sharded and ``originals`` are shards, written into the live shards in
    #: place for each reference forward (:func:`rna_train.sharded.swapped`).
    in_place: bool = False
    #: The model is FSDP2-sharded: forwards on it run to the end (one stopped early would leave
    #: FSDP's state mid-forward and a module gathered).
    complete_forwards: bool = False
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
        if self.in_place:
            model, originals = self.model, self.originals

            def forward(**kwargs: Any) -> Any:
                with sharded.swapped(model, originals):
                    return model(**kwargs)

            return forward
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
                                self.generator, batch.get("index"))

    @torch.no_grad()
    def ref_hidden(self, batch: dict[str, torch.Tensor], layer: int, *, noisy: bool = False) -> torch.Tensor:
        """Frozen (original-weights) model's layer-``layer`` output; ``noisy``: with target-mode RNA."""
        upto = self.reference_layer(layer, noisy)
        if upto == layer and self.cache is not None:
            cached = self.cache.output(batch, layer)
            if cached is not None:  # the noise, if any, enters at this very layer: no forward needed
                hidden = output_hidden(cached)
                if noisy and self._target_noise():
                    return self.rna.add_noise(hidden, batch["attention_mask"], self.step, self.generator,
                                              batch.get("index"))
                return hidden
        ref = self.require_reference()
        with self._reference_inputs(batch, upto), self._noise(noisy, batch):
            return layer_output(ref, layer, batch["input_ids"], batch["attention_mask"],
                                forward=self._reference_forward(), truncate=not self.complete_forwards)

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
            output = prefix_output(model, layer + 1, batch["input_ids"], batch["attention_mask"], forward=forward,
                                   truncate=not self.complete_forwards)
        self.cache.put(batch, layer, output)


def retain_term(ctx: StepContext, batch: dict[str, torch.Tensor], kind: str, layer: int) -> torch.Tensor:
    """Retain loss ``kind`` on ``batch`` with RNA.

    ``target`` noise goes into the frozen model's forward (its layer-k output), ``input`` noise
    into the updated model's; the other forward is clean. Padding never counts.
    """
    mask = batch["attention_mask"]
    if kind == "rm":
        target = ctx.ref_hidden(batch, layer, noisy=True)
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator, batch.get("index")):
            hidden = ctx.hidden(batch, layer)
        return losses.masked_mse(hidden, target, mask, ctx.tokens("retain"))
    if kind in ("kl", "mse"):
        head = ctx.output_head()
        if head is not None:
            ref_states = ctx.ref_head_states(batch, noisy=True)
            with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator, batch.get("index")):
                states = ctx.head_states(batch)
            term = losses.head_kl_ref_theta if kind == "kl" else losses.head_logsoftmax_mse
            return term(states, ref_states, head, mask, ctx.tokens("retain"), chunk=ctx.head_chunk(batch))
        ref_logits = ctx.ref_logits(batch, noisy=True)
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator, batch.get("index")):
            logits = ctx.logits(batch)
        if kind == "kl":
            return losses.kl_ref_theta(logits, ref_logits, mask, ctx.tokens("retain"))
        return losses.logsoftmax_mse(logits, ref_logits, mask, ctx.tokens("retain"))
    if kind == "nll":
        with ctx.rna.perturb("input", ctx.model, mask, ctx.step, ctx.generator, batch.get("index")):
            return ctx.mean_nll(batch, ctx.pairs("retain"))
    raise RNAError(f"unknown retain loss {kind!r}", where="method.retain_loss",
                   fix=f"use one of {', '.join(RETAIN_LOSSES)}")



@torch.no_grad()
def prefill(ctx: StepContext, method: Method, forget: Sequence[tuple[int, Batch]], retain: Sequence[Batch],
            *, progress: bool = False) -> None:
    """Compute and cache everything reference-side the steps will need for these batches.

    ``forget`` pairs each batch with its topic. For every batch: the output of the layer below the
    first trainable one (when layers are shared), then what the method asks for
    (:meth:`Method.prefill_forget`, :meth:`Method.prefill_retain`).
    """
    from rna_train.progress import bar

    jobs: list[tuple[str, int, Batch]] = [("forget", t, b) for t, b in forget] + [("retain", -1, b) for b in retain]
    for kind, topic, batch in bar(jobs, desc="reference pass", disable=not progress):
        if ctx.shared_layers and ctx.truncate:
            ctx.store_reference_states(batch, ctx.shared_layers - 1)
        if kind == "forget":
            method.prefill_forget(ctx, batch, topic)
        else:
            method.prefill_retain(ctx, batch)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


@dataclasses.dataclass
class TrainStep:
    """The training step: forward and backward of one step's micro-batches, RNA included.

    ``step(step, topic, forget, retain)`` accumulates the gradient of
    ``weight * forget + alpha * retain`` over the micro-batches (each term differentiated as soon as
    it is computed when one process runs, so the forget graph is freed before the retain forward)
    and returns the mean of every logged term; the optimizer update is the caller's. ``forward`` is
    the updated model's distributed wrapper when there is one; ``accelerator`` (an
    ``accelerate.Accelerator``) supplies autocast, gradient synchronisation on the last micro-batch
    and the backward; without one the step runs in one process with ``Tensor.backward``.
    """

    method: Method
    model: nn.Module
    rna: RNA
    forward: Callable[..., Any] | None = None
    reference: nn.Module | None = None
    originals: dict[str, torch.Tensor] | None = None
    shared_layers: int = 0
    truncate: bool = True
    cache: ReferenceCache | None = None
    head_chunk_bytes: int = 0
    accelerator: Any = None
    #: FSDP2 with the shared reference: ``originals`` are shards swapped in place
    #: (:class:`StepContext`), and the reference pass gathers the model once
    #: (:func:`rna_train.sharded.gathered`), restoring the engine's ``reshard_after_forward``.
    in_place: bool = False
    reshard_after_forward: bool = True

    @property
    def device(self) -> torch.device:
        """Where batches go: the accelerator's device, else the model's."""
        if self.accelerator is not None:
            return self.accelerator.device
        return next(self.model.parameters()).device

    def context(self, step: int, counts: dict[str, Counts] | None = None) -> StepContext:
        """The :class:`StepContext` of step ``step`` (its RNA generator seeded from the step)."""
        return StepContext(model=self.model, forward=self.forward or self.model, reference=self.reference,
                           rna=self.rna, step=step,
                           generator=self.rna.generator(step, self.device) if self.rna.active else None,
                           truncate=self.truncate, counts=counts or {}, originals=self.originals,
                           in_place=self.in_place, complete_forwards=self.in_place,
                           shared_layers=self.shared_layers, cache=self.cache,
                           head_chunk_bytes=self.head_chunk_bytes)

    def prefill(self, forget: Sequence[tuple[int, Batch]], retain: Sequence[Batch], *, progress: bool = False) -> None:
        """The reference pass before step 1 (:func:`prefill`) on the same models as the steps."""
        ctx = dataclasses.replace(self.context(0), forward=self.model, generator=None)
        block: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.in_place and self.originals is not None:
            # The original values are in the gathered model for the whole pass: nothing to swap.
            block = sharded.gathered(self.model, self.originals, self.reshard_after_forward)
            ctx = dataclasses.replace(ctx, originals={}, in_place=False)
        with block, self._autocast():
            prefill(ctx, self.method, [(t, _to(b, self.device)) for t, b in forget],
                    [_to(b, self.device) for b in retain], progress=progress)

    def __call__(self, step: int, topic: int, forget: Sequence[Batch], retain: Sequence[Batch] | None,
                 counts: dict[str, Counts] | None = None) -> dict[str, float]:
        """Forward and backward over the micro-batches of step ``step``; the mean of each term."""
        ctx = self.context(step, counts)
        sums: dict[str, float] = {}
        n = len(forget)
        split = self._split_backward()
        for g in range(n):
            f = _to(forget[g], self.device)
            r = _to(retain[g], self.device) if retain is not None else None
            with self._sync(last=g == n - 1), self._autocast():
                if split:
                    _, terms = self.method.loss(ctx, f, r, topic, backward=lambda term: self._backward(term / n))
                else:
                    loss, terms = self.method.loss(ctx, f, r, topic)
                    self._backward(loss / n)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / n
        return sums

    def _backward(self, term: torch.Tensor) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(term)
        elif term.requires_grad:
            term.backward()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.accelerator.autocast() if self.accelerator is not None else contextlib.nullcontext()

    def _sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradients are synchronised across processes only on the last micro-batch."""
        if last or self.accelerator is None or self.forward is None:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.forward)

    def _split_backward(self) -> bool:
        """Whether the forget and retain terms are differentiated one after the other.

        It frees the forget graph before the retain forward (lower peak memory). Distributed wrappers
        synchronise gradients on each backward, so there the total is differentiated once.
        """
        if self.accelerator is None:
            return True
        from accelerate.utils import DistributedType

        return bool(self.accelerator.distributed_type == DistributedType.NO)
