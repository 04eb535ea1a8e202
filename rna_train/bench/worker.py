"""Run one benchmark measurement in this (fresh) process and print its result as one JSON line.

    python -m rna_train.bench.worker '{"kind": "train", ...}'
"""

from __future__ import annotations

import json
import sys

import torch

from rna_train.bench import workload


def main() -> int:
    """Parse the spec, run it and print the JSON result."""
    spec = json.loads(sys.argv[1])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    run = {"train": workload.train_steps, "eval": workload.eval_pass, "idle": workload.idle}[spec["kind"]]
    sys.stdout.write(json.dumps(run(spec)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
