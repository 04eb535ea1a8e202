"""Multiple-choice scoring of any Hugging Face causal LM by log-likelihood.

Three scorings, all computed from continuation log-likelihoods log p(continuation | context):

* ``loglik``: sum over the answer text's tokens, context ``Question: ...\\nAnswer:``, continuation
  ``" " + choice`` (the lm-evaluation-harness ``acc`` convention);
* ``loglik_norm``: the same sum divided by the answer's token count (length-normalised);
* ``letter``: the choices are listed as ``A. ...`` in the context and each continuation is
  ``" A"``, ``" B"``, ... (weak for small models, which fall below chance with letters).

Requests are sorted by length and batched with right padding and an attention mask; only the
continuation positions are read (and, where the model accepts ``logits_to_keep``, only the
positions from the batch's first continuation token on are projected onto the vocabulary), so
padding never enters a score (batched scores equal unbatched
ones up to float rounding, which a test checks). Context/continuation are tokenised as in
lm-evaluation-harness: trailing context whitespace moves into the continuation, the pair is encoded
whole and the continuation is what follows the encoded context.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from typing import Any

from rna_theory.errors import RNAError
from rna_train.eval.probes import LETTERS, Question

SCORINGS: tuple[str, ...] = ("loglik", "loglik_norm", "letter")


def answer_context(question: str) -> str:
    """Context for answer-text scoring (also the text the latent audit feeds the model)."""
    return f"Question: {question.strip()}\nAnswer:"


def letter_context(question: str, choices: Sequence[str]) -> str:
    """Context for letter scoring: the question followed by lettered choices."""
    lines = [f"Question: {question.strip()}"]
    lines += [f"{LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def parse_scorings(spec: str | Sequence[str]) -> list[str]:
    """Validate a comma-separated (or listed) choice of scorings; the first is the primary one."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in names if s not in SCORINGS]
    if bad or not names:
        raise RNAError(f"unknown scoring {', '.join(bad) or '(none)'}", where="scoring",
                       fix=f"use a comma-separated subset of {', '.join(SCORINGS)}")
    return list(dict.fromkeys(names))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` as it follows that context."""
    n_space = len(context) - len(context.rstrip())
    if n_space:
        continuation = context[-n_space:] + continuation
        context = context[:-n_space]
    ctx = list(tokenizer(context)["input_ids"])
    whole = list(tokenizer(context + continuation)["input_ids"])
    if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
        return ctx, whole[len(ctx):]
    return ctx, list(tokenizer(continuation, add_special_tokens=False)["input_ids"])


def pad_id(tokenizer: Any) -> int:
    """Id used for padding (never scored): the pad token, else EOS, else 0."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def model_max_length(model: Any, default: int = 2048) -> int:
    """Longest input the model accepts, from its config (``default`` when it does not say)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def continuation_logprobs(model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], *,
                          batch_size: int = 8, max_length: int | None = None) -> list[tuple[float, int]]:
    """``(sum log p(continuation | context), continuation token count)`` per request.

    Inputs longer than ``max_length`` are truncated from the left (the continuation is kept).
    """
    import torch
    from tqdm.auto import tqdm

    max_length = max_length or model_max_length(model)
    encoded = []
    for context, continuation in requests:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not ctx or not cont:
            raise RNAError(f"cannot score continuation {continuation!r}: it or its context encodes to no "
                           "tokens", where="tokenizer", fix="use a tokenizer that encodes the probe text")
        ids = (ctx + cont)[:-1]
        if len(cont) > max_length:
            raise RNAError(f"answer of {len(cont)} tokens exceeds the model's {max_length}-token window",
                           where="probe", fix="shorten the answer choices")
        encoded.append((ids[-max_length:], cont))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    results: list[tuple[float, int]] = [(math.nan, 0)] * len(encoded)
    device = next(model.parameters()).device
    fill = pad_id(tokenizer)
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    with torch.inference_mode():
        starts = range(0, len(order), batch_size)
        for b in tqdm(starts, desc="scoring", unit="batch", leave=False, disable=None):
            batch = order[b:b + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), fill, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = encoded[i][0]
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[row, : len(ids)] = 1
            # project only the positions that predict continuation tokens onto the vocabulary
            first = min(len(encoded[i][0]) - len(encoded[i][1]) for i in batch) if keep_arg else 0
            kwargs = {"logits_to_keep": torch.arange(first, width, device=device)} if keep_arg else {}
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs).logits
            for row, i in enumerate(batch):
                ids, cont = encoded[i]
                targets = torch.tensor(cont, dtype=torch.long, device=logits.device)
                span = logits[row, len(ids) - len(cont) - first: len(ids) - first].float().log_softmax(-1)
                results[i] = (float(span.gather(-1, targets[:, None]).sum()), len(cont))
    return results


@dataclasses.dataclass
class ChoiceScores:
    """Per-choice scores of one question under each scoring, and the answer-text token counts."""

    scores: dict[str, list[float]]
    n_tokens: list[int]

    def prediction(self, scoring: str) -> int:
        """Index of the best-scoring choice (first one on ties)."""
        values = self.scores[scoring]
        return max(range(len(values)), key=lambda i: (values[i], -i))

    def probabilities(self, scoring: str) -> list[float]:
        """Scores turned into probabilities normalised over the choices (softmax)."""
        values = self.scores[scoring]
        top = max(values)
        weights = [math.exp(v - top) for v in values]
        total = sum(weights)
        return [w / total for w in weights]


def score_questions(model: Any, tokenizer: Any, questions: Sequence[Question], scorings: Sequence[str], *,
                    batch_size: int = 8, max_length: int | None = None) -> list[ChoiceScores]:
    """Score every choice of every question under each of ``scorings``."""
    scorings = parse_scorings(scorings)
    out = [ChoiceScores({}, []) for _ in questions]
    if {"loglik", "loglik_norm"} & set(scorings):
        requests = [(answer_context(q.question), " " + c.strip()) for q in questions for c in q.choices]
        flat = iter(continuation_logprobs(model, tokenizer, requests, batch_size=batch_size,
                                          max_length=max_length))
        for q, res in zip(questions, out, strict=True):
            pairs = [next(flat) for _ in q.choices]
            res.n_tokens = [n for _, n in pairs]
            if "loglik" in scorings:
                res.scores["loglik"] = [s for s, _ in pairs]
            if "loglik_norm" in scorings:
                res.scores["loglik_norm"] = [s / n for s, n in pairs]
    if "letter" in scorings:
        requests = [(letter_context(q.question, q.choices), " " + LETTERS[i])
                    for q in questions for i in range(len(q.choices))]
        flat = iter(continuation_logprobs(model, tokenizer, requests, batch_size=batch_size,
                                          max_length=max_length))
        for q, res in zip(questions, out, strict=True):
            res.scores["letter"] = [next(flat)[0] for _ in q.choices]
    return out
