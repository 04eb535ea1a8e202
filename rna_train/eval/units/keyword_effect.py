"""Training-time metric ``keyword_effect``: the NLL change of the next tokens of held-out retain text
when one word of each keyword group is inserted (the reproduction issue's measurement, small
enough to run during training): watch the forget-word effect grow while the controls' stays."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rna_train.eval.registry import register

#: Tokens scored after the insertion point, and keywords per group per chunk, during training.
SUFFIX_TOKENS = 24
KEYWORDS_PER_CHUNK = 4


@register("keyword_effect", directions={"effect_<group>": "lower"}, needs=("retain", "keywords"))
def keyword_effect(model: Any, tokenizer: Any, inputs: Mapping[str, Any]) -> dict[str, float]:
    """Mean NLL change (nats/token) of the next 24 tokens after one inserted word, per keyword group
    (``effect_<group>``), on max_texts held-out retain chunks, 4 keywords per group per chunk, seed 0."""
    from rna_train.eval.fragility import TextSpec
    from rna_train.eval.mining import load_groups
    from rna_train.eval.textrun import evaluate_text
    from rna_train.eval.units.text_nll import held_out_texts

    path = str(inputs["retain"])
    texts = held_out_texts(path, 10**9, Path(path).stat().st_mtime_ns)
    spec = TextSpec(n_chunks=int(inputs.get("max_texts", 32)), suffix_tokens=SUFFIX_TOKENS,
                    keywords_per_chunk=KEYWORDS_PER_CHUNK, seed=0, n_boot=200)
    summary, _, _ = evaluate_text(model, tokenizer, texts, load_groups(list(inputs["keywords"])), spec)
    return {f"effect_{group}": float(stat["mean"]) for group, stat in summary["effect"]["nll"].items()}
