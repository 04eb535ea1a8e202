"""Multiple-choice evaluation of one model as a library function: clean accuracy per scoring and,
with keyword-perturbed twins, the robustness; writes ``eval.json`` and ``predictions.jsonl``.

``rna eval --probe`` parses arguments and calls :func:`run_probe_eval`; so do the studies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def select_questions(probe: Path, *, subjects: str | None = None, sample: int | None = None, limit: int | None = None,
                     seed: int = 0) -> list[Any]:
    """The probe's questions, filtered by ``subjects``, then ``sample`` drawn at random (``seed``), then
    the first ``limit``."""
    from rna_theory.errors import check_int
    from rna_train.eval.probes import load_probe, sample_questions, select_subjects

    check_int(seed, "--seed", minimum=0)
    questions = load_probe(probe)
    if subjects:
        questions = select_subjects(questions, subjects)
    if sample is not None:
        questions = sample_questions(questions, check_int(sample, "--sample", minimum=1), seed)
    if limit is not None:
        questions = questions[: check_int(limit, "--limit", minimum=1)]
    return questions


def perturbation_plan(questions: Sequence[Any], keywords: str, *, mode: str, seed: int,
                      position: str | int = "random") -> tuple[list[Any], dict[str, Any]]:
    """Keyword-perturbed twins of ``questions`` (``keywords``: a packaged list name or a file) and
    the record of how they were made."""
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.perturb import parse_position, perturb_questions

    kind, words = resolve_keywords(keywords)
    position = parse_position(position)
    pairs = perturb_questions(questions, words, mode=mode, seed=seed, position=position)
    return pairs, {"mode": mode, "keywords": keywords, "keyword_kind": kind, "n_keywords": len(words),
                   "seed": seed, "position": position}


def run_probe_eval(model: Any, tokenizer: Any, questions: Sequence[Any], *, scorings: Sequence[str],
                   out: Path | None, info: dict[str, Any], pairs: Sequence[Any] | None = None,
                   perturbation: dict[str, Any] | None = None, batch_size: int = 8, max_length: int | None = None,
                   ci: str = "wilson", confidence: float = 0.95) -> dict[str, Any]:
    """Evaluate, log one line per scoring and (with ``out``) write the run folder; returns the payload.

    ``info`` (label, model, probe, its hash, sampling options) is recorded as given.
    """
    from rna_train.eval.evaluate import EVAL_FORMAT, evaluate, now, write_json, write_records
    from rna_train.eval.keywords import check_known_keywords

    if pairs:
        check_known_keywords(tokenizer, [p.perturbation.keyword for p in pairs], "--keywords")
    log.info("scoring %d questions%s with %s", len(questions), " and their perturbed twins" if pairs else "",
             ", ".join(scorings))
    results, records = evaluate(model, tokenizer, questions, scorings=scorings, pairs=pairs, batch_size=batch_size,
                                max_length=max_length, ci_method=ci, confidence=confidence)
    for s, entry in results.items():
        line = f"{s}: clean accuracy {entry['clean']['overall']['rate']:.3f}"
        if "robustness" in entry:
            rob = entry["robustness"]
            line += f", perturbed {rob['perturbed_accuracy']['rate']:.3f}, unchanged {rob['unchanged']['rate']:.3f}"
        log.info("%s (n=%d)", line, len(questions))
    payload = {"format": EVAL_FORMAT, "created": now(), **info, "n_questions": len(questions),
               "scorings": list(scorings), "primary": scorings[0], "ci": {"method": ci, "confidence": confidence},
               "perturbation": perturbation, "results": results}
    if out is not None:
        write_json(out / "eval.json", payload)
        write_records(out / "predictions.jsonl", records)
        log.info("wrote %s", out / "eval.json")
    else:
        log.info("nothing saved (no --out)")
    return payload
