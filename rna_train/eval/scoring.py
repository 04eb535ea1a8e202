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
from rna_train.eval.choices import SCORINGS
from rna_train.eval.probes import LETTERS, Question


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

    from rna_train.progress import bar

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
        for b in bar(starts, desc="scoring", unit="batch", leave=False):
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


def _cache_kwarg(model: Any) -> str | None:
    """Name of the forward argument taking a KV cache (``cache`` in transformers 5, earlier
    ``past_key_values``), or None when the model takes none."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def grouped_continuation_logprobs(model: Any, tokenizer: Any, groups: Sequence[tuple[str, Sequence[str]]], *,
                                  batch_size: int = 8, max_length: int | None = None,
                                  ) -> list[list[tuple[float, int]]]:
    """:func:`continuation_logprobs` for continuations that share a context, encoding it once.

    ``groups`` holds ``(context, [continuation, ...])`` (a question and its choices). Contexts are
    sorted by length and run ``batch_size`` at a time with right padding and a KV cache; the
    continuations of every context in the batch then run as one batch continuing from the cache
    (rows of the cache repeated per continuation; explicit positions and an attention mask that
    hides the contexts' padding). The first continuation token is scored from the context's last
    position. A 4-choice question of a 60-token context and 5-token answers costs about 80 token
    positions instead of 260. Groups that would exceed ``max_length`` or whose continuations
    change the context's tokenisation, and models without a KV cache, fall back to
    :func:`continuation_logprobs` (same values up to float rounding).
    """
    import torch

    max_length = max_length or model_max_length(model)
    cache_arg = _cache_kwarg(model)
    encoded: list[tuple[list[int], list[list[int]]] | None] = []
    fallback: list[int] = []
    for g, (context, continuations) in enumerate(groups):
        pairs = [encode_pair(tokenizer, context, c) for c in continuations]
        ctx = pairs[0][0] if pairs else []
        conts = [cont for _, cont in pairs]
        fits = bool(ctx) and all(cont for cont in conts) and len(ctx) + max(map(len, conts)) - 1 <= max_length
        if cache_arg is None or not fits or any(c != ctx for c, _ in pairs):
            fallback.append(g)
            encoded.append(None)
        else:
            encoded.append((ctx, conts))
    results: list[list[tuple[float, int]]] = [[] for _ in groups]
    if fallback:
        flat = [(groups[g][0], c) for g in fallback for c in groups[g][1]]
        values = iter(continuation_logprobs(model, tokenizer, flat, batch_size=batch_size, max_length=max_length))
        for g in fallback:
            results[g] = [next(values) for _ in groups[g][1]]
    order = sorted((g for g, e in enumerate(encoded) if e is not None),
                   key=lambda g: -len(encoded[g][0]))  # type: ignore[index]
    device = next(model.parameters()).device
    fill = pad_id(tokenizer)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch = [(g, encoded[g]) for g in order[b:b + batch_size]]
            for g, values in zip(order[b:b + batch_size],
                                 _score_shared(model, batch, fill, device, cache_arg),  # type: ignore[arg-type]
                                 strict=True):
                results[g] = values
    return results


def _score_shared(model: Any, batch: list[tuple[int, tuple[list[int], list[list[int]]]]], fill: int,
                  device: Any, cache_arg: str) -> list[list[tuple[float, int]]]:
    """Scores of one batch of contexts and their continuations (see grouped_continuation_logprobs)."""
    import torch

    lengths = [len(ctx) for _, (ctx, _) in batch]
    width = max(lengths)
    ids = torch.full((len(batch), width), fill, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (_, (ctx, _)) in enumerate(batch):
        ids[row, :len(ctx)] = torch.tensor(ctx)
        mask[row, :len(ctx)] = 1
    ids, mask = ids.to(device), mask.to(device)
    last = torch.tensor(lengths, device=device) - 1
    # project only the contexts' last positions onto the vocabulary
    keep = torch.unique(last)
    kwargs = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
    at = torch.searchsorted(keep, last) if kwargs else last
    first_logp = out.logits[torch.arange(len(batch), device=device), at].float().log_softmax(-1)
    cache = getattr(out, "cache", None) or out.past_key_values
    rows = [(q, cont) for q, (_, (_, conts)) in enumerate(batch) for cont in conts]
    span = max(len(cont) for _, cont in rows) - 1
    rest: Any = None
    if span > 0:
        select = torch.tensor([q for q, _ in rows], device=device)
        cache.reorder_cache(select)
        cont_ids = torch.full((len(rows), span), fill, dtype=torch.long)
        cont_mask = torch.zeros((len(rows), span), dtype=torch.long)
        for r, (_, cont) in enumerate(rows):
            cont_ids[r, :len(cont) - 1] = torch.tensor(cont[:-1])
            cont_mask[r, :len(cont) - 1] = 1
        positions = last[select].unsqueeze(1) + 1 + torch.arange(span, device=device)
        full_mask = torch.cat([mask[select], cont_mask.to(device)], dim=1)
        rest = model(input_ids=cont_ids.to(device), attention_mask=full_mask, position_ids=positions,
                     use_cache=True, **{cache_arg: cache}).logits.float().log_softmax(-1)
    scores: list[list[tuple[float, int]]] = [[] for _ in batch]
    for r, (q, cont) in enumerate(rows):
        total = first_logp[q, cont[0]]
        if len(cont) > 1:
            targets = torch.tensor(cont[1:], device=device)
            total = total + rest[r, :len(cont) - 1].gather(-1, targets[:, None]).sum()
        scores[q].append((float(total), len(cont)))
    return scores


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


def _question_logprobs(model: Any, tokenizer: Any, groups: list[tuple[str, list[str]]], *, batch_size: int,
                       max_length: int | None, shared_prefix: bool) -> list[tuple[float, int]]:
    """Flat per-choice scores of ``(context, choices)`` groups, the context encoded once or per choice."""
    if shared_prefix:
        nested = grouped_continuation_logprobs(model, tokenizer, groups, batch_size=batch_size,
                                               max_length=max_length)
        return [pair for group in nested for pair in group]
    requests = [(context, c) for context, conts in groups for c in conts]
    return continuation_logprobs(model, tokenizer, requests, batch_size=batch_size, max_length=max_length)


def score_questions(model: Any, tokenizer: Any, questions: Sequence[Question], scorings: Sequence[str], *,
                    batch_size: int = 8, max_length: int | None = None,
                    shared_prefix: bool = True) -> list[ChoiceScores]:
    """Score every choice of every question under each of ``scorings``.

    With ``shared_prefix`` (default) each question's context is encoded once and its choices
    continue from the KV cache (:func:`grouped_continuation_logprobs`); otherwise every choice is
    scored with its own full forward (:func:`continuation_logprobs`). Both give the same scores up
    to float rounding.
    """
    scorings = parse_scorings(scorings)
    out = [ChoiceScores({}, []) for _ in questions]
    common = {"batch_size": batch_size, "max_length": max_length, "shared_prefix": shared_prefix}
    if {"loglik", "loglik_norm"} & set(scorings):
        groups = [(answer_context(q.question), [" " + c.strip() for c in q.choices]) for q in questions]
        flat = iter(_question_logprobs(model, tokenizer, groups, **common))
        for q, res in zip(questions, out, strict=True):
            pairs = [next(flat) for _ in q.choices]
            res.n_tokens = [n for _, n in pairs]
            if "loglik" in scorings:
                res.scores["loglik"] = [s for s, _ in pairs]
            if "loglik_norm" in scorings:
                res.scores["loglik_norm"] = [s / n for s, n in pairs]
    if "letter" in scorings:
        groups = [(letter_context(q.question, q.choices), [" " + LETTERS[i] for i in range(len(q.choices))])
                  for q in questions]
        flat = iter(_question_logprobs(model, tokenizer, groups, **common))
        for q, res in zip(questions, out, strict=True):
            res.scores["letter"] = [next(flat)[0] for _ in q.choices]
    return out
