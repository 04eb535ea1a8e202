"""Perturbed-query builder: one keyword inserted into, or substituted for one word of, a question.

Words are maximal runs of non-whitespace. An insertion before word ``p`` puts the keyword and one
space in front of that word (after the last word: one space and the keyword), so the perturbed
question's words are ``words[:p] + keyword.split() + words[p:]``; a substitution replaces word
``p`` by the keyword, giving ``words[:p] + keyword.split() + words[p+1:]``. Choices and answer are
never touched. Each question draws its keyword and position from its own generator seeded by
``(seed, index)``, so results are reproducible per seed and independent of batch order; the
perturbation (keyword, word position, mode, character span) is stored with every result.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rna_theory.errors import RNAError, check_int
from rna_train.eval.probes import Question

Mode = Literal["insert", "substitute"]
MODES: tuple[str, ...] = ("insert", "substitute")
_WORD = re.compile(r"\S+")


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """What was changed: ``keyword`` at word ``position`` by ``mode``.

    ``start``/``end`` delimit the keyword in the perturbed question (characters); ``replaced`` is
    the word a substitution removed (``None`` for an insertion).
    """

    keyword: str
    position: int
    mode: str
    start: int
    end: int
    replaced: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PerturbedQuestion:
    """A clean question, its perturbed twin (same choices and answer) and the perturbation."""

    clean: Question
    perturbed: Question
    perturbation: Perturbation


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words (non-whitespace runs) of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def perturb_text(text: str, keyword: str, position: int, mode: str) -> tuple[str, Perturbation]:
    """Insert ``keyword`` before word ``position`` or substitute it for that word."""
    keyword = " ".join(keyword.split())
    if not keyword:
        raise RNAError("keyword is empty", where="keywords", fix="use non-empty keywords")
    spans = word_spans(text)
    n = len(spans)
    if mode == "insert":
        if not 0 <= position <= n:
            raise RNAError(f"insert position {position} is out of range for {n} words", where="position",
                           fix=f"use a word position in 0..{n}")
        if position < n:
            at = spans[position][0]
            new = text[:at] + keyword + " " + text[at:]
            return new, Perturbation(keyword, position, mode, at, at + len(keyword))
        at = spans[-1][1] if spans else 0
        sep = " " if spans else ""
        new = text[:at] + sep + keyword + text[at:]
        return new, Perturbation(keyword, position, mode, at + len(sep), at + len(sep) + len(keyword))
    if mode == "substitute":
        if not 0 <= position < n:
            raise RNAError(f"substitute position {position} is out of range for {n} words",
                           where="position", fix=f"use a word position in 0..{max(n - 1, 0)}")
        start, end = spans[position]
        new = text[:start] + keyword + text[end:]
        return new, Perturbation(keyword, position, mode, start, start + len(keyword), text[start:end])
    raise RNAError(f"unknown perturbation mode {mode!r}", where="mode", fix=f"use one of {', '.join(MODES)}")


def _position(spec: str | int, n_words: int, mode: str, rng: np.random.Generator) -> int:
    last = n_words if mode == "insert" else n_words - 1
    if spec == "random":
        return int(rng.integers(0, last + 1))
    if spec == "start":
        return 0
    if spec == "end":
        return last
    return min(int(spec), last)


def parse_position(spec: str | int) -> str | int:
    """Validate a position spec: ``random``, ``start``, ``end`` or a non-negative word index."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        value = spec
    elif spec in ("random", "start", "end"):
        return spec
    else:
        try:
            value = int(spec)
        except (TypeError, ValueError):
            value = -1
    if value < 0:
        raise RNAError(f"invalid position {spec!r}", where="position",
                       fix="use random, start, end or a non-negative word index")
    return value


def perturb_questions(questions: Sequence[Question], keywords: Sequence[str], *, mode: str = "insert",
                      seed: int = 0, position: str | int = "random") -> list[PerturbedQuestion]:
    """Perturbed twins of ``questions``: per question one keyword drawn from ``keywords``.

    ``position`` is ``random`` (uniform over valid word positions), ``start``, ``end`` or a word
    index (clipped to the question's last valid position; the actual position is recorded).
    Deterministic given ``seed``: question ``i`` uses the generator seeded by ``(seed, i)``.
    """
    if mode not in MODES:
        raise RNAError(f"unknown perturbation mode {mode!r}", where="mode",
                       fix=f"use one of {', '.join(MODES)}")
    if not keywords:
        raise RNAError("no keywords given", where="keywords", fix="pass at least one keyword")
    position = parse_position(position)
    seed = check_int(seed, "seed", minimum=0)
    out = []
    for i, q in enumerate(questions):
        rng = np.random.default_rng([seed, i])
        keyword = keywords[int(rng.integers(0, len(keywords)))]
        n_words = len(word_spans(q.question))
        pos = _position(position, n_words, mode, rng)
        text, pert = perturb_text(q.question, keyword, pos, mode)
        out.append(PerturbedQuestion(q, dataclasses.replace(q, question=text), pert))
    return out
