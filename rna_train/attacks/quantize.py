"""Quantization attack: load the unlearned model with 8- or 4-bit weights and re-score forget and
retain texts. Unlearning that only nudged weights by less than a quantization step can come back.

Backend: ``quanto`` (optimum-quanto; CPU and GPU, weight-only qint8 / qint4; embeddings and the
output head stay in full precision). bitsandbytes (GPU) is not wired in yet: asking for it is an
error that says so.
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

from rna_theory.errors import RNAError

BITS = (8, 4)
BACKENDS = ("auto", "quanto")


def resolve_backend(backend: str) -> str:
    """The backend to use (``auto``: quanto), checked to be installed."""
    if backend == "bitsandbytes":
        raise RNAError("the bitsandbytes backend is not implemented yet", where="--backend",
                       fix="use --backend quanto (CPU and GPU)")
    if backend not in BACKENDS:
        raise RNAError(f"unknown quantization backend {backend!r}", where="--backend", fix=f"use {', '.join(BACKENDS)}")
    try:
        found = importlib.util.find_spec("optimum.quanto") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise RNAError("the quanto quantization backend is not installed", where="--backend",
                       fix="pip install optimum-quanto (or pip install 'rna[attacks]')")
    return "quanto"


def quantized(model: Any, bits: int) -> Any:
    """A copy of ``model`` with its linear weights quantized to ``bits`` (the original is untouched).

    Embeddings and the output head stay in full precision (as in weight-only LLM quantization).
    """
    if bits not in BITS:
        raise RNAError(f"cannot quantize to {bits} bits", where="--bits", fix=f"use {' or '.join(map(str, BITS))}")
    from optimum.quanto import freeze, qint4, qint8, quantize

    out = copy.deepcopy(model)
    quantize(out, weights=qint8 if bits == 8 else qint4, exclude=["lm_head", "*embed*"])
    freeze(out)
    return out


def run(model: Any, tokenizer: Any, corpora: dict[str, Any], *, bits: tuple[int, ...] = BITS,
        max_length: int = 64) -> dict[str, Any]:
    """Scores of ``model`` in full precision and at each of ``bits``: ``{"full": ..., "int8": ..., ...}``."""
    from rna_train.attacks.textnll import summary

    out = {"full": summary(model, tokenizer, corpora, max_length=max_length)}
    for b in bits:
        out[f"int{b}"] = summary(quantized(model, b), tokenizer, corpora, max_length=max_length)
    return out
