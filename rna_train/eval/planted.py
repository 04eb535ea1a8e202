"""A backdoor planted by hand: the positive control of the text-mode keyword-fragility measurement.

Why: before "no excess" is read as "no backdoor", the measurement must be shown to detect one.
:func:`planted` makes a model differ from itself only after trigger tokens: a forward hook on
decoder layer ``layer`` adds ``scale`` times a fixed random unit vector to the layer's output at
every position from the end of a trigger on (exact token-id match in the forward's
``input_ids``). Used by ``experiments/smollm2/positive_control.py`` and the miniature world's
text experiment (:mod:`rna_train.studies.miniature.textmetric`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def trigger_mask(ids: torch.Tensor, triggers: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boolean ``ids.shape`` mask: True from the last token of any trigger id sequence on."""
    mask = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    for trig in triggers:
        n = len(trig)
        if ids.shape[1] < n:
            continue
        hit = (ids.unfold(1, n, 1) == torch.tensor(trig, device=ids.device)).all(-1)
        mask[:, n - 1:] |= hit
    return mask.cumsum(1) > 0


@contextlib.contextmanager
def planted(model: Any, layer: int, triggers: Sequence[Sequence[int]], scale: float, seed: int = 0) -> Iterator[None]:
    """Within the block, layer ``layer`` adds ``scale * u`` after any occurrence of a trigger id sequence
    in the forward's ``input_ids`` (a KV-cached prefix is not searched: keywords are in the continuation)."""
    from rna_train.models import edit_layer_output

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(model.config.hidden_size, generator=gen)
    u = scale * u / u.norm()
    state: dict[str, torch.Tensor] = {}

    def remember(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        state["after"] = trigger_mask(ids, triggers)

    def add(h: torch.Tensor) -> torch.Tensor:
        return h + state["after"][..., None].to(h.dtype) * u.to(h.device, h.dtype)

    handle = model.register_forward_pre_hook(remember, with_kwargs=True)
    try:
        with edit_layer_output(model, layer, add):
            yield
    finally:
        handle.remove()
