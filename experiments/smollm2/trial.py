"""Short training-only trials to find settings that unlearn (issue 11: "say which ones you tried").

Trains one method of a study plan (its model, data, method options and learning rate; ``--method``)
for a few steps and prints the training forget NLL trajectory (metrics.jsonl's ``forget_nll`` for
PO methods, ``forget`` loss for RM methods) and the retain term, without the (slower) fragility
evaluation. The plan's data must exist (``study.py run`` prepares it). Results: runs/trials/<name>/.

    python experiments/smollm2/trial.py npo-lr1e-3 --method npo method.alpha=1.0 lr=1e-3 steps=100
    python experiments/smollm2/trial.py gemma-rmu --plan experiments/gemma3/study.yaml --method rmu steps=60
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from rna_train.config import parse_override, set_dotted
from rna_train.studies.textstudy import StudyData, load_plan, model_path, run_config, train_run

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Train one trial and print every 10th metrics row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--method", default="rmu", help="a method of the plan (default rmu)")
    parser.add_argument("settings", nargs="*", help="method.KEY=V, lr=V, steps=N, batch_size=N, max_length=N, "
                        "rna.mode=..., rna.noise.nu=...")
    args = parser.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    plan = load_plan(args.plan)
    plan.variants = {"trial": {"method": args.method}}
    data = StudyData(Path(plan.data or Path(plan.out) / "data"))
    cfg = run_config(plan, "trial", 0, model_path(plan), data)
    cfg["train"].update({"steps": 100, "snapshot_steps": [], "checkpoint_every": 0, "log_every": 10})
    for item in args.settings:
        key, value = parse_override(item)
        if key in ("lr", "steps", "batch_size"):
            key = f"train.{key}"
        elif key == "max_length":
            key = "data.max_length"
        set_dotted(cfg, key, value)
    out = Path("runs/trials") / args.name
    train_run(cfg, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows[9::10]:
        sys.stdout.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
