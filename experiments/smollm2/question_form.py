"""The question-form measure of the study (issue 11): correct-answer NLL of non-biology MMLU questions
after one inserted word (:mod:`rna_train.eval.answerform`), for the base model and study snapshots.

Needs `rna assets fetch mmlu` and a study run (experiments/smollm2/study.py). Questions: the MMLU
retain subjects (all but the 9 biology/medicine ones), at most 300 characters with choices, a
seeded sample. Resumable: each model's result is a file.

    python experiments/smollm2/question_form.py --runs rmu:0:150 rmu:1:150 rmu-input-0.1:0:150
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Score base and each VARIANT:SEED:STEP snapshot; print the effect and excess per group."""
    from rna_train.checkpoint import snapshot_path
    from rna_train.eval.answerform import AnswerCells, score_answers, summarize_answers
    from rna_train.eval.fragility import TextSpec
    from rna_train.eval.probes import load_probe, sample_questions, select_subjects
    from rna_train.studies.assets import require
    from rna_train.studies.textstudy import Evaluator, load_plan, load_trainable, restore

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--runs", nargs="*", default=[], help="VARIANT:SEED:STEP snapshots to score")
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--keywords-per-question", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    plan = load_plan(args.plan)
    ev = Evaluator(plan)
    mmlu = select_subjects(load_probe(require("mmlu") / "retain.jsonl"), "retain")
    short = [q for q in mmlu if len(q.question) + sum(map(len, q.choices)) <= 300 and len(q.question.split()) >= 2]
    questions = sample_questions(short, args.questions, 0)
    spec = TextSpec(keywords_per_chunk=args.keywords_per_question, batch_size=16)
    out = Path(plan.out) / "question-form"
    out.mkdir(parents=True, exist_ok=True)
    groups = ev.data.groups()
    base_path = out / "base.npz"
    if not base_path.is_file():
        score_answers(ev.model, ev.tokenizer, questions, groups, spec).save(base_path)
    base = AnswerCells.load(base_path)
    results = {"base": summarize_answers(base, spec)}
    for run in args.runs:
        variant, seed, step = run.split(":")
        path = out / f"{variant}-seed-{seed}-step-{step}.npz"
        if not path.is_file():
            snap = snapshot_path(Path(plan.out) / variant / f"seed-{seed}" / "snapshots", int(step))
            originals = load_trainable(ev.model, snap)
            try:
                score_answers(ev.model, ev.tokenizer, questions, groups, spec).save(path)
            finally:
                restore(ev.model, originals)
        results[run] = summarize_answers(AnswerCells.load(path), spec, base)
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    for name, r in results.items():
        line = {g: round(e["mean"], 3) for g, e in r["effect"].items()}
        ex = {g: f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]" for g, e in r.get("excess", {}).items()}
        sys.stdout.write(f"{name}: clean answer NLL {r['clean_answer_nll']:.3f} effect {line} excess {ex}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
