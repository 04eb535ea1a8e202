"""Held-out forget and retain text: mean next-token NLL and top-1 accuracy (unlearning strength and cost),
as training-time metrics (forget_text, retain_text) and as the suite section text_nll."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rna_train.eval.registry import Row, Section, register, register_section


@functools.lru_cache(maxsize=8)
def held_out_texts(path: str, limit: int, _mtime_ns: int) -> tuple[str, ...]:
    """The first ``limit`` non-empty texts of ``path``, read once per file version (every evaluation of a
    run scores them; the modification time in the key makes an edited file read again)."""
    from rna_train.data import read_texts

    return tuple([t for t in read_texts(path) if t.strip()][:limit])


def _score(model: Any, tokenizer: Any, inputs: Mapping[str, Any], corpus: str) -> dict[str, float]:
    from rna_train.attacks.textnll import document_scores

    path = str(inputs[corpus])
    texts = held_out_texts(path, int(inputs.get("max_texts", 32)), Path(path).stat().st_mtime_ns)
    scores = document_scores(model, tokenizer, texts, max_length=int(inputs.get("max_length", 64)))
    return {"nll": float(scores["nll"].mean()), "top1": float(scores["top1"].mean())}


@register("forget_text", directions={"nll": "higher", "top1": "lower"}, needs=("forget",))
def forget_text(model: Any, tokenizer: Any, inputs: Mapping[str, Any]) -> dict[str, float]:
    """NLL and top-1 of the first max_length tokens of max_texts held-out forget texts (higher NLL: more forgotten)."""
    return _score(model, tokenizer, inputs, "forget")


@register("retain_text", directions={"nll": "lower", "top1": "higher"}, needs=("retain",))
def retain_text(model: Any, tokenizer: Any, inputs: Mapping[str, Any]) -> dict[str, float]:
    """NLL and top-1 of held-out retain texts (the cost of unlearning: lower NLL is better)."""
    return _score(model, tokenizer, inputs, "retain")


def _suite_text_nll(ctx: Any, name: str) -> dict[str, Any]:
    """Forget and retain NLL / top-1 of one model, intervals over texts."""
    from rna_train.attacks.textnll import summary

    model, tok = ctx.model(name)
    corpora = {k: ctx.texts(k, ctx.cfg.max_texts) for k in ("forget", "retain")}
    return summary(model, tok, corpora, max_length=ctx.cfg.max_length)


def _text_rows(result: Mapping[str, Any]) -> list[Row]:
    return [Row(f"{corpus} {key}", result[corpus][key], better)
            for corpus, key, better in (("forget", "nll", "higher"), ("forget", "top1", "lower"),
                                        ("retain", "nll", "lower"), ("retain", "top1", "higher"))]


register_section("text_nll", Section(_suite_text_nll, _text_rows, title="Held-out text: forgetting and retain cost"),
                 directions={"nll": "higher", "top1": "lower"}, needs=("forget", "retain"),
                 doc="Mean next-token NLL and top-1 accuracy of the first max_length tokens of max_texts held-out "
                     "forget and retain texts, 95 % bootstrap intervals over texts. Forgetting shows as a higher "
                     "forget NLL than the base model's; its cost as a higher retain NLL.")
