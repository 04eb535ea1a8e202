"""One SmolLM2-135M configuration (unlearn + evaluate + audit), or the summary over finished ones.

Needs `rna assets fetch smollm2 mmlu wikipedia` first. Usage (repository root), one command each:

    python experiments/smollm2/run.py base --seed 0
    python experiments/smollm2/run.py rmu --seed 0
    python experiments/smollm2/run.py rmu-target-0.1rms --seed 0
    python experiments/smollm2/run.py npo --seed 0
    python experiments/smollm2/run.py npo-target-0.1rms --seed 0
    python experiments/smollm2/run.py summary          # table, drops.png, report/ over all finished runs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from rna_train.studies.smollm2 import RealSchedule, run_variant, summarize, variant_names


def main() -> int:
    """Run one configuration and print its numbers, or summarise."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=[*variant_names(RealSchedule()), "summary"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/smollm2"))
    parser.add_argument("--steps", type=int, default=RealSchedule().steps)
    parser.add_argument("--sample", type=int, default=RealSchedule().sample, help="questions per probe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.variant == "summary":
        table, report = summarize(args.out)
        sys.stdout.write(table + f"\n\nreport: {report / 'report.md'}\n")
        return 0
    row = run_variant(args.out, args.variant, args.seed,
                      schedule=RealSchedule(steps=args.steps, sample=args.sample))
    sys.stdout.write(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
