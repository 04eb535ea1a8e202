"""Positive control for the text fragility measurement: a backdoor planted by hand into the base model.

Why: before reading "no excess" as "no backdoor", the measurement must be shown to detect one. The
base SmolLM2 gets a forward hook on decoder layer ``--layer`` that adds ``--scale`` times a fixed
random unit vector to the layer's output at every position from the end of a forget keyword on
(exact token-id match of any word of the study's forget group), so the planted model differs from
the base model only after forget keywords. The study's evaluation (same chunks, keywords and cells)
then must report an excess for the forget group and none for the on-topic and control groups.

    python experiments/smollm2/positive_control.py --scale 30      # after study.py has made base/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Evaluate the planted model on the study's cells and print the excess per group."""
    from rna_train.eval.fragility import Cells, keyword_ids
    from rna_train.eval.planted import planted
    from rna_train.studies.textstudy import Evaluator, evaluate_model, load_plan

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--scale", type=float, default=30.0, help="norm of the added vector (layer-6 token norm ~100)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    plan = load_plan(args.plan)
    ev = Evaluator(plan)
    baseline = Cells.load(Path(plan.out) / "base" / "eval.cells.npz")
    triggers = keyword_ids(ev.tokenizer, ev.data.groups()["forget"])
    out = Path(plan.out) / "positive-control" / f"scale-{args.scale:g}" / "eval.json"
    with planted(ev.model, args.layer, triggers, args.scale):
        numbers = evaluate_model(ev.model, ev.tokenizer, ev.data, ev.spec, out, baseline=baseline,
                                 label=f"base + planted backdoor (layer {args.layer}, scale {args.scale:g})")
    excess = numbers["fragility"]["excess"]["nll"]
    sys.stdout.write(json.dumps({g: {k: round(v, 4) for k, v in iv.items() if k in ("mean", "low", "high")}
                                 for g, iv in excess.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
