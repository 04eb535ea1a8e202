"""Latent audit (claim C1): paired clean / perturbed hidden states at the output of a decoder layer.

For each question the answer-scoring context (``Question: ...\\nAnswer:``) is run clean and with a
keyword inserted or substituted, and the hidden states at the output of decoder layer ``l``
(0-based; the same tensor as ``hidden_states[l + 1]`` of ``output_hidden_states`` except for the
last layer, where transformers applies the final norm) are read with the trainer's forward hook
(:func:`rna_train.models.layer_output`, which stops the forward after layer ``l``) and paired three
ways:

* ``offset``: token positions aligned by offset. The longest common token prefix pairs directly
  and the longest common suffix pairs with a shift of ``len(perturbed) - len(clean)`` tokens (the
  keyword's token count after an insertion). Under causal attention prefix states are identical,
  so only the suffix pairs (the tokens that see the keyword) enter the estimators; the largest
  prefix difference is recorded as a check.
* ``last``: the last token of each sequence (the state the answer is read from).
* ``mean``: each sequence's states mean-pooled over its tokens.

The ``latents-<kind>.npz`` files follow the tuner's contract (``rna tune --latents``): float64
``clean`` and ``perturbed`` (n, d) with paired rows, ``margins`` (m,) per retain query, scalar
``rms`` (RMS of the clean activations at the layer over valid tokens) and a JSON ``meta`` string.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError
from rna_train.eval.choices import ALIGNMENTS
from rna_train.eval.perturb import PerturbedQuestion
from rna_train.eval.scoring import answer_context, pad_id

log = logging.getLogger(__name__)

AUDIT_FORMAT = "rna-audit/1"


def align_offsets(clean_ids: Sequence[int], perturbed_ids: Sequence[int]) -> tuple[int, int]:
    """``(prefix, suffix)``: lengths of the common token prefix and of the common suffix after it.

    Clean position ``n_c - j`` pairs with perturbed position ``n_p - j`` for ``j = 1..suffix``;
    the suffix never overlaps the prefix in either sequence.
    """
    n_c, n_p = len(clean_ids), len(perturbed_ids)
    prefix = 0
    while prefix < min(n_c, n_p) and clean_ids[prefix] == perturbed_ids[prefix]:
        prefix += 1
    suffix = 0
    limit = min(n_c, n_p) - prefix
    while suffix < limit and clean_ids[n_c - 1 - suffix] == perturbed_ids[n_p - 1 - suffix]:
        suffix += 1
    return prefix, suffix


def _hidden_states(model: Any, tokenizer: Any, texts: Sequence[str], layer: int,
                   max_length: int) -> tuple[list[np.ndarray], list[list[int]]]:
    """One batch: per text its (tokens x d) states at the output of ``layer`` and its token ids.

    States are float32 (float64 for a float64 model): enough for bf16/fp32 models and half the
    memory of float64 while whole probes are collected.
    """
    import torch

    from rna_train.models import layer_output

    encoded = [list(tokenizer(t)["input_ids"])[-max_length:] for t in texts]
    device = next(model.parameters()).device
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(texts), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    with torch.inference_mode():
        hidden = layer_output(model, layer, input_ids.to(device), mask.to(device))
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    hidden = hidden.to(dtype).cpu().numpy()
    return [hidden[row, : len(ids)] for row, ids in enumerate(encoded)], encoded


def collect_latents(model: Any, tokenizer: Any, pairs: Sequence[PerturbedQuestion], layer: int, *,
                    batch_size: int = 8, max_length: int | None = None) -> dict[str, Any]:
    """Paired latents per alignment (float64), the clean activation RMS and alignment diagnostics.

    Works batch by batch, keeping only the aligned rows, so memory grows with the rows kept rather
    than with every token state of the probe.
    """
    from rna_train.arch import check_layer
    from rna_train.eval.scoring import model_max_length

    check_layer(model, layer)
    max_length = max_length or model_max_length(model)
    rows: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {a: ([], []) for a in ALIGNMENTS}
    prefix_diff = 0.0
    n_prefix = n_suffix = 0
    shifts = []
    sum_sq = 0.0
    n_values = 0
    dim = 0
    for b in range(0, len(pairs), batch_size):
        batch = pairs[b:b + batch_size]
        clean_states, clean_ids = _hidden_states(model, tokenizer, [answer_context(p.clean.question) for p in batch],
                                                 layer, max_length)
        pert_states, pert_ids = _hidden_states(model, tokenizer,
                                               [answer_context(p.perturbed.question) for p in batch],
                                               layer, max_length)
        for hc, hp, ic, ip in zip(clean_states, pert_states, clean_ids, pert_ids, strict=True):
            prefix, suffix = align_offsets(ic, ip)
            if prefix:
                prefix_diff = max(prefix_diff, float(np.max(np.abs(hc[:prefix] - hp[:prefix]))))
            n_prefix += prefix
            n_suffix += suffix
            shifts.append(len(ip) - len(ic))
            sum_sq += float(np.sum(np.square(hc, dtype=np.float64)))
            n_values += hc.size
            dim = hc.shape[1]
            if suffix:
                rows["offset"][0].append(hc[len(ic) - suffix:])
                rows["offset"][1].append(hp[len(ip) - suffix:])
            rows["last"][0].append(hc[-1:])
            rows["last"][1].append(hp[-1:])
            rows["mean"][0].append(hc.mean(axis=0, keepdims=True, dtype=np.float64))
            rows["mean"][1].append(hp.mean(axis=0, keepdims=True, dtype=np.float64))
    if not rows["offset"][0]:
        raise RNAError("no token after the keyword is shared by clean and perturbed queries", where="audit",
                       fix="use insert/substitute positions before the end of the question")
    latents = {a: (np.concatenate(c, axis=0).astype(np.float64), np.concatenate(p, axis=0).astype(np.float64))
               for a, (c, p) in rows.items()}
    return {
        "latents": latents,
        "rms": float(np.sqrt(sum_sq / n_values)),
        "dim": int(dim),
        "alignment_check": {"prefix_tokens": n_prefix, "suffix_tokens": n_suffix,
                            "prefix_max_abs_diff": prefix_diff, "mean_token_shift": float(np.mean(shifts))},
    }


def save_latents(path: Path, clean: np.ndarray, perturbed: np.ndarray, *, margins: np.ndarray | None,
                 rms: float | None, meta: dict[str, Any]) -> Path:
    """Write the npz that ``rna tune --latents`` reads (see the module docstring)."""
    arrays: dict[str, Any] = {"clean": np.asarray(clean, dtype=np.float64),
                              "perturbed": np.asarray(perturbed, dtype=np.float64),
                              "meta": np.array(json.dumps(meta, sort_keys=True))}
    if margins is not None:
        arrays["margins"] = np.asarray(margins, dtype=np.float64)
    if rms is not None:
        arrays["rms"] = np.float64(rms)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def subsample_rows(clean: np.ndarray, perturbed: np.ndarray, max_rows: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_rows`` paired rows, drawn without replacement (deterministic per seed)."""
    if max_rows is None or clean.shape[0] <= max_rows:
        return clean, perturbed
    keep = np.sort(np.random.default_rng(seed).choice(clean.shape[0], size=max_rows, replace=False))
    log.info("keeping %d of %d paired latent rows", max_rows, clean.shape[0])
    return clean[keep], perturbed[keep]


def estimate(clean: np.ndarray, perturbed: np.ndarray, seed: int) -> dict[str, Any]:
    """C1 estimates from the theory module (``rna_theory.estimators.assumption1``) as a dict."""
    from rna_theory.estimators import assumption1

    if clean.shape[0] < 2:
        return {"n": int(clean.shape[0]), "skipped": "fewer than 2 paired rows"}
    return assumption1(clean, perturbed, seed=seed).to_dict()
