"""The SmolLM2-135M keyword-fragility study (plan: experiments/smollm2/study.yaml; docs/results.md).

Needs `rna assets fetch smollm2 wikipedia`. Each variant's trainings are a sweep (`rna sweep`'s
machinery, rna_train.sweep) of its trainer config over its seeds: runs in `<out>/<variant>/seed-<N>/`
(snapshots, then `eval-step-<step>.json` per evaluation step), and beside them `config.yaml` (the
variant's trainer config, seed set per run), `sweep.json` and `summary.md` / `.json` / `.png` (the
loss terms, mean of each run's last 10 steps, with a Student-t 95 % interval over seeds).
Resumable: finished trainings and evaluations are skipped, a started training resumes from its last
checkpoint; adding seeds (variants.NAME.seeds=[0,1,2]) adds them to the variant's sweep. Two
processes can share the job list (`--shard 0/2` and `--shard 1/2`, one torch thread each: each
trains and evaluates its own (variant, seed) jobs); the base model is evaluated first by every shard
that finds it missing... so start shard 0 alone until `runs/study/base/eval.json` exists.

    python experiments/smollm2/study.py run                      # every variant and seed
    python experiments/smollm2/study.py run --only rmu --seeds 0 # one variant, one seed
    python experiments/smollm2/study.py summary                  # summary.json, tables, figures
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from rna_train.studies.textstudy import Evaluator, jobs, load_plan

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the plan's jobs (or one shard of them), or summarise the finished ones."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "summary"))
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--only", nargs="*", default=(), help="variant names (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="run only these of each variant's seeds (to add seeds: variants.NAME.seeds=[0,1,2])")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    parser.add_argument("--summary", type=Path, default=None, help="summary JSON (default <out>/summary.json)")
    parser.add_argument("--figure", type=Path, default=None, help="trade-off figure (default <out>/tradeoff.png)")
    parser.add_argument("overrides", nargs="*", help="plan overrides, key=value")
    args = parser.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    plan = load_plan(args.plan, args.overrides)
    if args.command == "summary":
        from rna_train.studies.textstudy_summary import summarize_study

        sys.stdout.write(summarize_study(plan, summary_path=args.summary, figure=args.figure) + "\n")
        return 0
    index, count = (int(x) for x in args.shard.split("/"))
    evaluator = Evaluator(plan)
    evaluator.base()
    for name, seed in jobs(plan, args.only, args.seeds)[index::count]:
        logging.info("study: %s seed %d", name, seed)
        evaluator.run(name, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
