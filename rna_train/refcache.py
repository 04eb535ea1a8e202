"""Outputs of the frozen reference, computed in one pass before training and reused at every step.

The reference (the original weights) never changes, so what it computes on a token sequence is
fixed; only target-mode RNA noise, fresh every step, has to enter a forward. The cache keeps, per
sequence, addressed by its content (real tokens, their offset and a label mask when there is one):

* **values**: small per-sequence numbers a forget loss needs (NPO's reference NLL, DPO's
  reference log-probabilities, Adaptive RMU's activation norms);
* **states**: a decoder layer's output at the sequence's real tokens, from which a step's forward
  resumes (:func:`rna_train.models.replay_prefix`): the layer below the first trainable one
  (shared by the updated model's forwards), layer l for RM targets, the last layer for the KL /
  MSE reference distributions, or RNA's layer when target noise must enter there.

States live in host memory up to a byte budget; sequences beyond it are computed every step, as
without the cache. Filling happens in :func:`rna_train.step.prefill`, over fixed batches (sorted by length) of
every sequence the run will visit, so a resumed run caches bit-identical values.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from rna_train.models import output_hidden

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class ReferenceCache:
    """Per-sequence reference values and layer states (see the module docstring)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._values: dict[tuple[str, bytes], torch.Tensor] = {}
        #: (layer, key) -> (offset of the first real token, states of the real tokens).
        self._states: dict[tuple[int, bytes], tuple[int, torch.Tensor]] = {}
        #: Layer -> length of the layer's raw tuple output (None: the layer returns a bare tensor).
        self._shapes: dict[int, int | None] = {}
        self._refused: set[int] = set()
        self.state_bytes = 0
        #: The last batches' keys, by tensor identity: a step looks the same batch up several times,
        #: and each :meth:`keys` reads the ids back from the accelerator.
        self._recent: list[tuple[tuple[torch.Tensor, ...], list[bytes]]] = []

    @staticmethod
    def keys(batch: Batch) -> list[bytes]:
        """One content key per row: real-token offset, real tokens and ``label_mask`` if present."""
        ids = batch["input_ids"].detach().cpu()
        mask = batch["attention_mask"].detach().cpu().bool()
        labels = batch.get("label_mask")
        labels = labels.detach().cpu() if labels is not None else None
        out = []
        for r in range(ids.shape[0]):
            real = mask[r]
            h = hashlib.blake2b(digest_size=16)
            first = int(real.nonzero()[0, 0]) if bool(real.any()) else -1
            h.update(first.to_bytes(8, "little", signed=True))
            h.update(ids[r][real].numpy().tobytes())
            if labels is not None:
                h.update(b"labels")
                h.update(labels[r][real].to(torch.uint8).numpy().tobytes())
            out.append(h.digest())
        return out

    def _keys(self, batch: Batch) -> list[bytes]:
        """:meth:`keys`, remembered for the few most recent batches (compared by tensor identity)."""
        tensors = tuple(t for t in (batch["input_ids"], batch["attention_mask"], batch.get("label_mask"))
                        if t is not None)
        for seen, keys in self._recent:
            if len(seen) == len(tensors) and all(a is b for a, b in zip(seen, tensors, strict=True)):
                return keys
        keys = self.keys(batch)
        self._recent = [(tensors, keys), *self._recent[:7]]
        return keys

    def values(self, name: str, batch: Batch, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Per-row values ``name`` of ``batch`` (shape: rows), computed by ``compute`` only if missing."""
        keys = self._keys(batch)
        found = [self._values.get((name, k)) for k in keys]
        if all(v is not None for v in found):
            return torch.stack(found).to(batch["input_ids"].device)  # type: ignore[arg-type]
        values = compute().detach()
        for key, value in zip(keys, values, strict=True):
            self._values[(name, key)] = value.clone()
        return values

    def has_states(self, batch: Batch, layer: int) -> bool:
        """Whether every row of ``batch`` has layer ``layer``'s output cached."""
        return layer in self._shapes and all((layer, k) in self._states for k in self._keys(batch))

    def accepts(self, layer: int) -> bool:
        """False once layer ``layer``'s outputs were refused (budget reached, or not replayable)."""
        return layer not in self._refused

    @property
    def complete(self) -> bool:
        """True while nothing was refused: every sequence offered to :meth:`put` is held."""
        return not self._refused

    def stored_layers(self) -> list[int]:
        """Layers with at least one cached state, ascending."""
        return sorted(self._shapes)

    def output(self, batch: Batch, layer: int) -> Any | None:
        """Layer ``layer``'s raw output on ``batch`` (padding positions zero), or None if any row is missing.

        On ``batch``'s device, in the dtype of the cached states; padding positions never reach a
        loss (every loss is masked), so their value is irrelevant.
        """
        if layer not in self._shapes:
            return None
        keys = self._keys(batch)
        rows = [self._states.get((layer, k)) for k in keys]
        if any(r is None for r in rows):
            return None
        device = batch["attention_mask"].device
        first = rows[0][1]  # type: ignore[index]
        # Assembled in host memory (pinned for an accelerator), then copied without blocking: no
        # boolean indexing on the device, no synchronisation. The accelerator holds only a step's rows.
        hidden = torch.zeros(*batch["attention_mask"].shape, first.shape[-1], dtype=first.dtype,
                             pin_memory=device.type == "cuda")
        for r, row in enumerate(rows):
            offset, states = row  # type: ignore[misc]
            hidden[r, offset:offset + states.shape[0]] = states
        hidden = hidden.to(device, non_blocking=True)
        size = self._shapes[layer]
        return hidden if size is None else (hidden, *([None] * (size - 1)))

    def put(self, batch: Batch, layer: int, output: Any) -> bool:
        """Cache ``output`` (layer ``layer``'s raw output on ``batch``); False when over budget or unreplayable."""
        if layer in self._refused:
            return False
        if isinstance(output, tuple) and any(x is not None for x in output[1:]):
            self._refuse(layer, "its output carries more than the hidden state (attention weights or a KV cache)")
            return False
        hidden = output_hidden(output).detach().cpu()  # one copy to host memory for the whole batch
        mask = batch["attention_mask"].detach().cpu().bool()
        new = []
        for r, key in enumerate(self._keys(batch)):
            real = mask[r].nonzero().flatten()
            if (layer, key) in self._states or not len(real):
                continue
            offset, count = int(real[0]), len(real)
            if int(real[-1]) - offset + 1 != count:
                self._refuse(layer, "a sequence's real tokens are not contiguous in its row")
                return False
            new.append((key, offset, hidden[r, offset:offset + count]))
        size = sum(t.numel() * t.element_size() for _, _, t in new)
        if self.state_bytes + size > self.budget_bytes:
            self._refuse(layer, f"the cache budget of {self.budget_bytes / 2**30:.2f} GiB is reached "
                                f"({self.state_bytes / 2**30:.2f} GiB held)")
            return False
        self._shapes[layer] = len(output) if isinstance(output, tuple) else None
        for key, offset, rows in new:
            self._states[(layer, key)] = (offset, rows.clone())
        self.state_bytes += size
        return True

    def _refuse(self, layer: int, why: str) -> None:
        self._refused.add(layer)
        log.warning("reference cache: not caching layer %d outputs for further sequences: %s; those "
                    "sequences are computed every step (raise train.reference_cache_gib to cache them)", layer, why)

    def summary(self) -> dict[str, Any]:
        """Counts and sizes, for the run log."""
        return {"values": len(self._values), "states": len(self._states), "layers": self.stored_layers(),
                "state_gib": self.state_bytes / 2**30}


def length_sorted_chunks(lengths: Sequence[int], indices: Iterable[int], size: int) -> list[list[int]]:
    """``indices`` (deduplicated) sorted by (length, index) and cut into chunks of ``size``.

    Depends only on the set of indices, so every run that visits the same sequences fills the cache
    from the same batches (and gets the same bits).
    """
    ordered = sorted(set(indices), key=lambda i: (lengths[i], i))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]
