"""Per-document next-token NLL and top-1 accuracy of texts, with a bootstrap interval over documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rna_theory.errors import RNAError


def text_token_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
                      batch_size: int = 16) -> list[Any]:
    """Per text, the :class:`~rna_train.eval.tokenscores.TokenScores` of its tokens 2..``max_length``
    given the first (texts under 2 tokens are skipped)."""
    from rna_train.eval.scoring import pad_id
    from rna_train.eval.tokenscores import plain_scores

    groups = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])[:max_length]
        if len(ids) >= 2:
            groups.append((ids[:1], [ids[1:]]))
    return [g[0] for g in plain_scores(model, groups, batch_size=batch_size, pad_id=pad_id(tokenizer))]


def document_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
                    batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per text: mean NLL and top-1 accuracy of its first ``max_length`` tokens (texts under 2 tokens skipped)."""
    scores = text_token_scores(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    if not scores:
        raise RNAError("no text has 2 or more tokens", where="texts", fix="pass longer held-out texts")
    return {"nll": np.array([-s.logprobs.mean() for s in scores]), "top1": np.array([s.top1.mean() for s in scores])}


def interval(values: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Mean and 95 % percentile-bootstrap interval over documents (``scipy.stats.bootstrap``)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return {"mean": float(values.mean()), "low": float("nan"), "high": float("nan"), "n": int(values.size)}
    res = stats.bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                          random_state=np.random.default_rng(seed))
    return {"mean": float(values.mean()), "low": float(res.confidence_interval.low),
            "high": float(res.confidence_interval.high), "n": int(values.size)}


def summary(model: Any, tokenizer: Any, corpora: dict[str, Sequence[str]], *, max_length: int = 64,
            batch_size: int = 16) -> dict[str, dict[str, dict[str, float]]]:
    """``{corpus: {nll: interval, top1: interval}}`` for each named list of texts."""
    out = {}
    for name, texts in corpora.items():
        scores = document_scores(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
        out[name] = {k: interval(v) for k, v in scores.items()}
    return out
