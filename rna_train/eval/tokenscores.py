"""Per-token scores of continuations that share a context: log-probabilities, top-1 hits, latents.

Why: the text-mode keyword-fragility evaluation (:mod:`rna_train.eval.fragility`) scores, for every
chunk of text, the same suffix after a clean prefix and after the prefix with each keyword
inserted. All those sequences share the prefix, so it is encoded once and every continuation runs
from its KV cache (:func:`shared_prefix_scores`); :func:`plain_scores` runs each full sequence
instead and is the reference the cached path is tested and benchmarked against.

Inputs are token ids (the caller tokenises the pieces, so the scored tokens are identical across
conditions by construction). For a context ``c`` and continuation ``t_1..t_n`` the scores are
``log p(t_i | c, t_<i)``, whether ``t_i`` is the arg-max prediction there, the arg-max itself, the
probit margin of the prediction ``(Phi^-1(p_1) - Phi^-1(p_2)) / 2`` (top two probabilities; the
retain margin of the robustness bounds, theory.md C6/C7), and optionally the output of decoder
layer ``layer`` (0-based) at the continuation's own positions (``n x d``). Probabilities are
computed in float64.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from rna_theory.errors import RNAError

Group = tuple[Sequence[int], Sequence[Sequence[int]]]


@dataclasses.dataclass
class TokenScores:
    """Scores of one continuation's tokens (see the module docstring)."""

    logprobs: np.ndarray
    top1: np.ndarray
    hidden: np.ndarray | None = None
    pred: np.ndarray | None = None
    margin: np.ndarray | None = None


def _layer_module(model: Any, layer: int | None) -> Any:
    """The decoder layer whose output is read, or None."""
    if layer is None:
        return None
    from rna_train import arch

    layers = arch.decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise RNAError(f"layer {layer} does not exist (the model has {len(layers)} decoder layers)",
                       where="--layer", fix=f"use 0..{len(layers) - 1}")
    return layers[layer]


def _forward(model: Any, module: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``(model output, output of module or None)`` of one forward pass."""
    from rna_train.models import output_hidden

    store: list[Any] = []
    handle = module.register_forward_hook(lambda _m, _a, out: store.append(output_hidden(out))) if module else None
    try:
        out = model(**kwargs)
    finally:
        if handle is not None:
            handle.remove()
    return out, (store[0] if store else None)


def _pack(logits: Any, targets: Any, hidden: Any) -> TokenScores:
    """TokenScores from logits (n x V) predicting ``targets`` (n) and optional hidden states."""
    import torch

    logp = logits.double().log_softmax(-1)
    picked = logp.gather(-1, targets[:, None])[:, 0]
    from rna_train.eval.robustness import P_CLIP

    best = logp.topk(2, dim=-1).values.exp().clamp(P_CLIP, 1 - P_CLIP)  # the latents-npz contract
    margin = (torch.special.ndtri(best[:, 0]) - torch.special.ndtri(best[:, 1])) / 2
    pred = logits.argmax(-1)
    h = None if hidden is None else hidden.float().cpu().numpy()
    return TokenScores(picked.cpu().numpy(), (pred == targets).cpu().numpy(), h, pred.cpu().numpy(),
                       margin.cpu().numpy())


def _check(groups: Sequence[Group]) -> None:
    for g, (ctx, conts) in enumerate(groups):
        if not ctx or not conts or any(not c for c in conts):
            raise RNAError(f"group {g} has an empty context or continuation", where="token scoring",
                           fix="every context and continuation needs at least one token")


def plain_scores(model: Any, groups: Sequence[Group], *, layer: int | None = None, batch_size: int = 8,
                 pad_id: int = 0) -> list[list[TokenScores]]:
    """Scores with one full forward per ``context + continuation`` (right padding, batched)."""
    import torch

    _check(groups)
    module = _layer_module(model, layer)
    device = next(model.parameters()).device
    flat = [(g, k, list(ctx) + list(cont), len(cont)) for g, (ctx, conts) in enumerate(groups)
            for k, cont in enumerate(conts)]
    out: list[list[TokenScores]] = [[None] * len(conts) for _, conts in groups]  # type: ignore[list-item]
    with torch.no_grad():  # (not inference_mode: optimum-quanto's quantized weights cannot run under it)
        for b in range(0, len(flat), batch_size):
            rows = flat[b:b + batch_size]
            width = max(len(ids) for _, _, ids, _ in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (_, _, seq, _) in enumerate(rows):
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
            result, hidden = _forward(model, module, input_ids=ids.to(device), attention_mask=mask.to(device),
                                      use_cache=False)
            for r, (g, k, seq, n) in enumerate(rows):
                start = len(seq) - n
                targets = ids[r, start:len(seq)].to(device)
                h = None if hidden is None else hidden[r, start:len(seq)]
                out[g][k] = _pack(result.logits[r, start - 1:len(seq) - 1], targets, h)
    return out


def shared_prefix_scores(model: Any, groups: Sequence[Group], *, layer: int | None = None,
                         batch_size: int = 64, pad_id: int = 0) -> list[list[TokenScores]]:
    """The same scores as :func:`plain_scores`, each context encoded once.

    Per group the context runs once (one row, KV cache kept); its continuations then run
    ``batch_size`` rows at a time from copies of that cache, with explicit positions and a mask
    hiding the continuations' right padding. Models without a KV cache argument fall back to
    :func:`plain_scores`.
    """
    import torch

    from rna_train.eval.scoring import _cache_kwarg

    _check(groups)
    cache_arg = _cache_kwarg(model)
    if cache_arg is None:
        return plain_scores(model, groups, layer=layer, batch_size=batch_size, pad_id=pad_id)
    module = _layer_module(model, layer)
    device = next(model.parameters()).device
    out: list[list[TokenScores]] = []
    with torch.inference_mode():
        for ctx, conts in groups:
            n_ctx = len(ctx)
            head = model(input_ids=torch.tensor([list(ctx)], device=device), use_cache=True)
            first = head.logits[0, -1]
            cache = getattr(head, "cache", None) or head.past_key_values
            scores: list[TokenScores] = []
            for b in range(0, len(conts), batch_size):
                rows = [list(c) for c in conts[b:b + batch_size]]
                width = max(map(len, rows))
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.ones((len(rows), n_ctx + width), dtype=torch.long)
                for r, seq in enumerate(rows):
                    ids[r, :len(seq)] = torch.tensor(seq)
                    mask[r, n_ctx + len(seq):] = 0
                rows_cache = copy.deepcopy(cache)
                rows_cache.batch_repeat_interleave(len(rows))
                positions = (n_ctx + torch.arange(width, device=device)).expand(len(rows), width)
                result, hidden = _forward(model, module, input_ids=ids.to(device), attention_mask=mask.to(device),
                                          position_ids=positions, use_cache=True, **{cache_arg: rows_cache})
                for r, seq in enumerate(rows):
                    n = len(seq)
                    logits = torch.cat([first[None], result.logits[r, :n - 1]])
                    h = None if hidden is None else hidden[r, :n]
                    scores.append(_pack(logits, ids[r, :n].to(device), h))
            out.append(scores)
    return out
