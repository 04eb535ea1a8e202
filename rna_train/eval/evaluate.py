"""One evaluation run: clean (and optionally keyword-perturbed) multiple-choice accuracy.

A run directory written by ``rna eval`` holds

* ``eval.json``: settings and results (format ``rna-eval/1``): per scoring the clean summary
  (overall and per-subject accuracy with intervals), and with a perturbation the perturbed summary
  and the measured robustness (unchanged-prediction rate, accuracy drop);
* ``predictions.jsonl``: one line per question: subject, answer, per scoring the choice scores
  and prediction, the clean probit margin, and with a perturbation the perturbed question and the
  perturbation (keyword, word position, mode, character span).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.eval.metrics import summarize
from rna_train.eval.perturb import PerturbedQuestion
from rna_train.eval.probes import Question
from rna_train.eval.robustness import measured_robustness, probit_margins
from rna_train.eval.scoring import ChoiceScores, parse_scorings, score_questions

EVAL_FORMAT = "rna-eval/1"


def now() -> str:
    """UTC timestamp recorded in result files."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def evaluate(model: Any, tokenizer: Any, questions: Sequence[Question], *, scorings: Sequence[str],
             pairs: Sequence[PerturbedQuestion] | None = None, batch_size: int = 8,
             max_length: int | None = None, ci_method: str = "wilson",
             confidence: float = 0.95) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(results, records)``: per-scoring summaries and one record per question.

    ``pairs`` (perturbed twins of ``questions``, same order) adds perturbed accuracy and the
    unchanged-prediction rate. The first scoring is the primary one (used for margins).
    """
    scorings = parse_scorings(scorings)
    ci = {"method": ci_method, "confidence": confidence}
    opts = {"batch_size": batch_size, "max_length": max_length}
    clean = score_questions(model, tokenizer, questions, scorings, **opts)
    pert: list[ChoiceScores] | None = None
    if pairs is not None:
        pert = score_questions(model, tokenizer, [p.perturbed for p in pairs], scorings, **opts)
    answers = [q.answer for q in questions]
    groups = [q.subject for q in questions]
    results: dict[str, Any] = {}
    for s in scorings:
        clean_pred = [c.prediction(s) for c in clean]
        clean_ok = [p == y for p, y in zip(clean_pred, answers, strict=True)]
        entry: dict[str, Any] = {"clean": summarize(clean_ok, groups, **ci)}
        if pert is not None:
            pert_pred = [c.prediction(s) for c in pert]
            pert_ok = [p == y for p, y in zip(pert_pred, answers, strict=True)]
            entry["perturbed"] = summarize(pert_ok, groups, **ci)
            entry["robustness"] = measured_robustness(clean_pred, pert_pred, answers, **ci)
        results[s] = entry
    margins = probit_margins([c.probabilities(scorings[0]) for c in clean])
    records = []
    for i, q in enumerate(questions):
        rec: dict[str, Any] = {
            "index": i, "subject": q.subject, "answer": q.answer, "question": q.question,
            "margin": float(margins[i]),
            "clean": {s: {"pred": clean[i].prediction(s), "scores": clean[i].scores[s]} for s in scorings},
        }
        if pairs is not None and pert is not None:
            rec["perturbed_question"] = pairs[i].perturbed.question
            rec["perturbation"] = pairs[i].perturbation.to_dict()
            rec["perturbed"] = {s: {"pred": pert[i].prediction(s), "scores": pert[i].scores[s]}
                                for s in scorings}
        records.append(rec)
    return results, records


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented UTF-8 JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def check_output_folder(path: Path | None, where: str = "--out") -> None:
    """Refuse, before any model loads, an output folder that is a file or cannot be created."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RNAError("a file is in the way of the output folder", where=str(path),
                       fix=f"give {where} a folder path (it is created if missing)")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK)):
        raise RNAError("the output folder cannot be created or written here", where=str(path),
                       fix=f"give {where} a folder on a writable filesystem")
