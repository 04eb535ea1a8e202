"""Run one benchmark measurement in this (fresh) process and print its result as one JSON line.

    python experiments/bench/worker.py '{"kind": "train", ...}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import workload


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
