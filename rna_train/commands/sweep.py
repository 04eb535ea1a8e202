"""Train a grid of runs (config keys x seeds), resumably, and summarise any metric with intervals.

Each `key=v1,v2,...` is an axis (commas inside [] or {} do not split); `key=value` is a fixed
override. Every point's config is checked before the first run; finished runs are skipped and a
started one resumes from its checkpoint, so rerunning an interrupted sweep continues it; a rerun may
add values to an axis (more seeds). Writes
OUT/sweep.json, OUT/runs/<key=value,...>/, OUT/summary.{json,md,png} (mean and Student-t 95 %
interval over --over, default seed). Details: docs/training.md.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rna sweep --config experiments/configs/tiny_llama_rmu.yaml --out /tmp/sweep \\
      rna.mode=target rna.noise.nu=0.0,0.05,0.1 seed=0,1,2 --metric forget retain
  rna sweep --config C --out DIR ...same grid...   # rerun: finished runs are skipped
  rna sweep --summary-only --out DIR --metric retain
  rna sweep --config C --out DIR seed=0,1,2,3 --run-folder 'seed-{seed}' --shard 0/2   # with --shard 1/2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the grid, the sweep folder and the summary options."""
    parser.epilog = EXAMPLES
    parser.add_argument("--config", help="YAML run config every point starts from (not with --summary-only)")
    parser.add_argument("--out", required=True, help="sweep folder (runs/, sweep.json, summary.*)")
    parser.add_argument("--metric", nargs="+", default=["loss"],
                        help="metrics.jsonl columns to summarise (default: %(default)s)")
    parser.add_argument("--last", type=int, default=1, help="average each run's last N steps (default: %(default)s)")
    parser.add_argument("--over", default="seed", help="axis the intervals are taken over (default: %(default)s)")
    parser.add_argument("--summary-only", action="store_true", help="summarise the finished runs, train nothing")
    parser.add_argument("--run-folder", default=None,
                        help="run folder template inside --out: {name} (key=value,...) or {KEY} of a swept key, "
                             "e.g. 'seed-{seed}' (default runs/{name}; fixed at the first invocation)")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="train only every N-th point starting at I (another process runs the others; "
                             "default: all); the summary lists unfinished points")
    parser.add_argument("overrides", nargs="*", metavar="KEY=V1,V2",
                        help="axes (several values) and fixed overrides (one value)")


def run(args: argparse.Namespace) -> int:
    """Run (or only summarise) the sweep and print its table; exit 2 when a run failed."""
    import sys
    from pathlib import Path

    from rna_theory.errors import RNAError
    from rna_train.sweep import RUN_FOLDER, run_sweep, shard_filter, summarize

    if args.last < 1:
        raise RNAError(f"--last {args.last} is below 1", where="--last", fix="average at least the last step")
    if args.summary_only:
        if not (Path(args.out) / "sweep.json").is_file():
            raise RNAError("no sweep.json here", where=args.out, fix="point --out at a sweep folder")
        summary = summarize(args.out, metrics=args.metric, over=args.over, last=args.last)
    else:
        if not args.config:
            raise RNAError("no run config given", where="--config", fix="pass --config FILE (or --summary-only)")
        summary = run_sweep(args.config, args.overrides, args.out, metrics=args.metric, over=args.over,
                            last=args.last, run_folder=args.run_folder or RUN_FOLDER,
                            only=shard_filter(args.overrides, args.shard))
    sys.stdout.write((Path(args.out) / "summary.md").read_text())
    return 2 if summary["failures"] else 0
