"""Keyword fragility in question form: the NLL of a question's correct answer after one inserted word.

Why: the paper measures the backdoor on MMLU questions with a forget keyword inserted. A 135M model
is at chance on multiple-choice accuracy, but the log-likelihood of the *correct answer text* still
moves when the question is derailed: this is the paper's setting scored where a small model is not
at chance. Per question one insertion point is drawn (generator seeded by ``(seed, question)``,
between the first and the last word of the question); the context is ``Question: ...\\nAnswer:``
and the scored continuation the correct choice, tokenised once (from the clean context) and reused
verbatim after every perturbed context, so the scored ids are identical across conditions.

Per (question, keyword) cell: the change of the answer's mean NLL per token. Groups, the per-chunk
keyword assignment and the crossed bootstrap (questions x keywords) are those of
:mod:`rna_train.eval.fragility`; against a baseline on the same cells the paired excess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError
from rna_train.eval.fragility import TextSpec, assignment, group_summary


@dataclasses.dataclass
class AnswerCells:
    """Clean answer NLL per question ``(Q,)`` and per (question, keyword) ``(Q, W)`` (NaN = not scored)."""

    keywords: list[str]
    groups: list[str]
    questions: list[str]
    clean: np.ndarray
    perturbed: np.ndarray

    def effect(self) -> np.ndarray:
        """(questions x keywords) NLL increase of the correct answer (nats/token)."""
        return self.perturbed - self.clean[:, None]

    def fingerprint(self) -> str:
        """Hash of the cells' identity (questions, keywords, scored cells)."""
        h = hashlib.sha256(json.dumps([self.questions, self.keywords, self.groups]).encode())
        h.update(np.packbits(~np.isnan(self.perturbed)).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> Path:
        """One npz (arrays + tables)."""
        meta = {"keywords": self.keywords, "groups": self.groups, "questions": self.questions}
        np.savez_compressed(path, clean=self.clean, perturbed=self.perturbed, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: Path) -> AnswerCells:
        """Read what :meth:`save` wrote."""
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return cls(meta["keywords"], meta["groups"], meta["questions"], z["clean"], z["perturbed"])


def insert_word(question: str, word: str, seed: int, index: int) -> str:
    """``question`` with ``word`` inserted before a word drawn by the generator seeded by ``(seed, index)``."""
    words = question.split()
    if len(words) < 2:
        raise RNAError(f"question {index} has fewer than 2 words", where="question form",
                       fix="filter out one-word questions")
    pos = int(np.random.default_rng([seed, index, 7]).integers(1, len(words)))
    return " ".join([*words[:pos], word, *words[pos:]])


def score_answers(model: Any, tokenizer: Any, questions: Sequence[Any], groups: dict[str, list[str]],
                  spec: TextSpec) -> AnswerCells:
    """Score the correct answer of every question, clean and with each assigned keyword."""
    from rna_train.eval.scoring import answer_context, encode_pair, pad_id
    from rna_train.eval.tokenscores import plain_scores
    from rna_train.progress import bar

    keywords = [k for words in groups.values() for k in words]
    group_of = [g for g, words in groups.items() for _ in words]
    mask = assignment(len(questions), [len(w) for w in groups.values()], spec)
    clean = np.zeros(len(questions))
    pert = np.full((len(questions), len(keywords)), np.nan)
    for i, q in enumerate(bar(questions, desc="answer form", unit="question")):
        # the clean question with single spaces, as insert_word writes the perturbed ones
        ctx, cont = encode_pair(tokenizer, answer_context(" ".join(q.question.split())),
                                " " + q.choices[q.answer].strip())
        cols = np.flatnonzero(mask[i])
        contexts = [ctx] + [list(tokenizer(answer_context(insert_word(q.question, keywords[c], spec.seed, i)))
                                 ["input_ids"]) for c in cols]
        scores = plain_scores(model, [(c, [cont]) for c in contexts], batch_size=spec.batch_size,
                              pad_id=pad_id(tokenizer))
        nll = [-s[0].logprobs.mean() for s in scores]
        clean[i] = nll[0]
        pert[i, cols] = nll[1:]
    return AnswerCells(keywords, group_of, [q.question for q in questions], clean, pert)


def summarize_answers(cells: AnswerCells, spec: TextSpec, baseline: AnswerCells | None = None) -> dict[str, Any]:
    """Clean answer NLL, per-group effect (and paired excess over ``baseline``) with crossed intervals."""
    out: dict[str, Any] = {"n_questions": len(cells.questions), "clean_answer_nll": float(cells.clean.mean()),
                           "effect": group_summary(cells.effect(), cells.groups, spec, ("question", "keyword"))}
    if baseline is not None:
        if baseline.fingerprint() != cells.fingerprint():
            raise RNAError("the baseline scored other questions, keywords or cells", where="question form",
                           fix="score both models with the same questions, groups and seed")
        out["excess"] = group_summary(cells.effect() - baseline.effect(), cells.groups, spec, ("question", "keyword"))
        out["baseline_clean_answer_nll"] = float(baseline.clean.mean())
    return out
