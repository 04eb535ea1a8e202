"""Benchmarks: this trainer vs a reference-style execution (two full models, full-depth forwards,
hooks), RNA on vs off, and shared-prefix vs per-choice multiple-choice scoring.

Each measurement runs in a fresh process and compared configurations alternate; the code lives
in :mod:`rna_train.bench` (docs/benchmarks.md has the figures and how to read them).
"""

from __future__ import annotations

import argparse
import json
import sys

from rna_theory.errors import RNAError

METHODS = ("rmu", "adaptive_rmu", "rsv", "npo_kl", "simnpo_kl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rna bench``."""
    parser.add_argument("--method", action="append", choices=METHODS,
                        help="method to measure (repeatable; default: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: 32-layer d=512 fp32 model; cuda: 7B-shaped bf16 model")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process rounds per configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--head-chunk-mib", type=float, default=8.0,
                        help="the trainer's train.head_chunk_mib (0: full logits)")
    parser.add_argument("--no-eval", action="store_true", help="skip the scoring benchmark")
    parser.add_argument("--no-rna", action="store_true", help="skip RNA on vs off")
    parser.add_argument("--no-compare", action="store_true", help="skip this trainer vs reference-style")
    parser.add_argument("--no-lora", action="store_true",
                        help="skip LoRA + gradient checkpointing vs reference-style (NPO+KL, SimNPO+KL)")
    parser.add_argument("--json", action="store_true", help="print the full results as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks and print the tables (or JSON)."""
    if args.steps < 1 or args.rounds < 1:
        raise RNAError("--steps and --rounds must be at least 1", where="rna bench", fix="pass positive counts")
    if args.head_chunk_mib < 0:
        raise RNAError("--head-chunk-mib must be >= 0", where="rna bench", fix="pass 0 (full logits) or a size")
    from rna_train.bench import run as bench

    report = bench.run_bench(args.method or list(METHODS), args.device, steps=args.steps, rounds=args.rounds,
                             evaluate=not args.no_eval, rna=not args.no_rna, threads=args.threads,
                             head_chunk_mib=args.head_chunk_mib, lora=not args.no_lora,
                             compare=not args.no_compare)
    sys.stdout.write((json.dumps(report, indent=1) if args.json else bench.format_report(report)) + "\n")
    return 0
