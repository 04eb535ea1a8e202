"""Suite section ``quantize``: the model's linear weights at 8 and 4 bits (optimum-quanto), held-out
forget and retain texts re-scored. Run on the base model too: the change quantization alone causes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rna_train.eval.registry import Row, Section, register_section


def _run(ctx: Any, name: str) -> dict[str, Any]:
    from rna_train.attacks import quantize

    model, tok = ctx.model(name)
    corpora = {k: ctx.texts(k, ctx.cfg.max_texts) for k in ("forget", "retain")}
    return quantize.run(model, tok, corpora, bits=tuple(ctx.cfg.quantize.bits), max_length=ctx.cfg.max_length)


def _rows(result: Mapping[str, Any]) -> list[Row]:
    return [Row(f"{cond}: {corpus} NLL", scores[corpus]["nll"], "higher" if corpus == "forget" else "lower")
            for cond, scores in result.items() for corpus in ("forget", "retain")]


def _check(cfg: Any) -> None:
    from rna_theory.errors import RNAError
    from rna_train.attacks import quantize

    quantize.resolve_backend(cfg.quantize.backend)
    bad = [b for b in cfg.quantize.bits if b not in quantize.BITS] or ([] if cfg.quantize.bits else ["none"])
    if bad:
        raise RNAError(f"cannot quantize to {bad} bits", where="quantize.bits", fix="use [8, 4] or one of them")


register_section("quantize", Section(_run, _rows, check=_check, title="Quantization attack"),
                 directions={"nll": "higher"}, needs=("forget", "retain"),
                 doc="Forget and retain NLL of the model in full precision and with weight-only int8 / int4 "
                     "linear layers (embeddings and head kept), 95 % bootstrap intervals over texts. Knowledge "
                     "hidden by weight changes smaller than a quantization step shows as a forget NLL falling "
                     "back toward the base model's.")
