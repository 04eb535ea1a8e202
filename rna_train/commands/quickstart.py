"""Run the miniature world end to end: generate, pretrain (or load the cached base model), unlearn
RMU and NPO with and without RNA, evaluate clean / trigger-perturbed / control-perturbed retain
accuracy and forget accuracy, audit the latents, and write a report. Under 5 minutes on 2 CPU cores.

Only the pretrained base model is cached (``--cache-dir``, default ~/.cache/rna/miniature, keyed by
a hash of the generator and model configs); every number in the report comes from this run.
``--real`` runs a shortened SmolLM2-135M version instead (after ``rna assets fetch smollm2 mmlu
wikipedia``).

Examples:
    rna quickstart                          # miniature world, runs/quickstart
    rna quickstart --seeds 0,1,2 --out runs/qs3
    rna quickstart --real                   # SmolLM2-135M, MMLU, Wikipedia (CPU: ~15 minutes)
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
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache of pretrained base models (default $RNA_CACHE_DIR/miniature or "
                             "~/.cache/rna/miniature)")
    parser.add_argument("--seeds", default="0", help="comma-separated unlearning seeds (default 0)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"METHOD or METHOD:MODE:NU, comma-separated (default {DEFAULT_VARIANTS})")
    parser.add_argument("--steps", type=int, default=None, help="unlearning steps per run (default: 150; "
                        "--real: 12)")
    parser.add_argument("--real", action="store_true",
                        help="run the shortened SmolLM2-135M version (needs `rna assets fetch smollm2 mmlu "
                             "wikipedia`)")


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
    # Tiny matrices: one thread is as fast as two and does not thrash when the cores are shared.
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.real:
        from rna_train.smollm2 import RealSchedule, run_real

        schedule = RealSchedule(steps=args.steps or 12)
        table, report = run_real(args.out, seeds=seeds, schedule=schedule, quick=True)
    else:
        table, report = _miniature(args, seeds)
    sys.stdout.write("\n" + table + "\n\n")
    sys.stdout.write(f"quickstart finished in {time.perf_counter() - start:.0f} s\n")
    sys.stdout.write(f"report: {report / 'report.md'} (and report.html)\n")
    return 0


def _miniature(args: argparse.Namespace, seeds: list[int]) -> tuple[str, Path]:
    from rna_train.eval.report import write_report
    from rna_train.miniature.experiment import (
        Schedule,
        Variant,
        markdown_table,
        plot_drops,
        plot_predicted,
        run_grid,
    )
    from rna_train.miniature.pretrain import load_or_pretrain

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
