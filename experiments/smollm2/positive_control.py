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
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def planted(model: Any, layer: int, triggers: Sequence[Sequence[int]], scale: float, seed: int = 0) -> Iterator[None]:
    """Within the block, layer ``layer`` adds ``scale * u`` after any occurrence of a trigger id sequence
    in the forward's ``input_ids`` (the KV-cached prefix is not searched: keywords are in the continuation)."""
    from rna_train.models import edit_layer_output

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(model.config.hidden_size, generator=gen)
    u = scale * u / u.norm()
    state: dict[str, torch.Tensor] = {}

    def remember(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for trig in triggers:
            n = len(trig)
            if ids.shape[1] < n:
                continue
            windows = ids.unfold(1, n, 1)
            hit = (windows == torch.tensor(trig)).all(-1)
            mask[:, n - 1:] |= hit
        state["after"] = mask.cumsum(1) > 0

    def add(h: torch.Tensor) -> torch.Tensor:
        return h + state["after"][..., None].to(h.dtype) * u.to(h.dtype)

    handle = model.register_forward_pre_hook(remember, with_kwargs=True)
    try:
        with edit_layer_output(model, layer, add):
            yield
    finally:
        handle.remove()


def main() -> int:
    """Evaluate the planted model on the study's cells and print the excess per group."""
    from rna_train.eval.fragility import Cells, keyword_ids
    from rna_train.textstudy import Evaluator, evaluate_model, load_plan

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
