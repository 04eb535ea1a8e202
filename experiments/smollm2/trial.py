"""Short training-only trials to find settings that unlearn (issue 11: "say which ones you tried").

Trains one method config of a study plan for a few steps and prints the training forget NLL
trajectory (metrics.jsonl's ``forget_nll`` for PO methods, ``forget`` loss for RM methods) and the
retain term, without the (slower) fragility evaluation. Results: runs/trials/<name>/.

    python experiments/smollm2/trial.py npo-lr1e-3 method.name=npo method.alpha=1.0 lr=1e-3 steps=100
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from rna_train.assets import require
from rna_train.config import parse_override, set_dotted
from rna_train.textstudy import StudyData, train_run

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Train one trial and print every 10th metrics row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("settings", nargs="*", help="method.KEY=V, lr=V, steps=N, batch_size=N, max_length=N, "
                        "rna.mode=..., rna.noise.nu=...")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    data = StudyData(Path("runs/study/data"))
    cfg = {"seed": 0, "model": {"name_or_path": str(require("smollm2")), "dtype": "fp32"},
           "data": {"forget": [{"name": "bio", "path": str(data.split("forget_train"))}],
                    "retain": {"name": "wikipedia", "path": str(data.split("retain_train"))},
                    "max_length": 64, "min_length": 16},
           "method": {"name": "npo", "layer": 6}, "rna": {"mode": "off", "noise": 0.0},
           "train": {"steps": 100, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 0, "log_every": 10,
                     "save_model": False, "progress": False}}
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
