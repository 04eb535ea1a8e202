"""The miniature world as a positive control for the text-mode backdoor measurement (issue 11, item 4).

For every world of the config (setting 4's world, and variants with topic context words and/or
without the foreign-marker augmentation): pretrain the base model (cached), measure it on held-out
retain text (:mod:`rna_train.studies.miniature.textmetric`), measure a hand-planted backdoor on the same
cells (positive control), unlearn with RMU per seed (the real trainer) and measure the excess of
each run's NLL rise over the base model's, per keyword group, pooled over seeds, chunks and
keywords. The config's ``rna`` variants (e.g. ``rmu:target:0.5``) are run on the same seeds and
compared with the method (difference of excess, seeds resampled separately). Resumable: finished
trainings (``DONE``) and evaluations (``text.json`` + ``cells.npz``) are reused. One thread.

    python experiments/miniature/text_backdoor.py --config experiments/miniature/text.yaml
    python experiments/miniature/text_backdoor.py --config experiments/miniature/text.yaml --only context-nofm
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from rna_train.eval.fragility import Cells
from rna_train.studies.miniature.pretrain import BaseModel

log = logging.getLogger("miniature-text")


def cached(folder: Path, compute: Callable[[], tuple[dict[str, Any], Cells]]) -> tuple[dict[str, Any], Cells]:
    """``(numbers, cells)`` from ``folder`` if a finished evaluation is there, else computed and saved."""
    done = folder / "text.json"
    if done.is_file() and (folder / "cells.npz").is_file():
        return json.loads(done.read_text()), Cells.load(folder / "cells.npz")
    folder.mkdir(parents=True, exist_ok=True)
    numbers, cells = compute()
    cells.save(folder / "cells.npz")
    tmp = folder / "text.json.tmp"
    tmp.write_text(json.dumps(numbers, indent=1) + "\n")
    tmp.replace(done)  # written last: its presence marks a finished evaluation
    return numbers, cells


def headline(numbers: dict[str, Any]) -> dict[str, Any]:
    """The figures a summary keeps of one evaluation: held-out NLLs, NLL effect and excess per group."""
    frag = numbers["fragility"]
    out: dict[str, Any] = {"forget_nll": numbers["forget_heldout"]["nll"],
                           "retain_nll": numbers["retain_heldout"]["nll"],
                           "clean_suffix_nll": frag["clean"]["nll"], "effect": frag["effect"]["nll"],
                           "shift": frag["shift"]}
    if "excess" in frag:
        out["excess"] = frag["excess"]["nll"]
        out["excess_head"] = frag["excess"]["nll_head"]
    return out


def run_world(name: str, overrides: dict[str, Any], plan: dict[str, Any], out: Path,
              cache_dir: Path | None) -> dict[str, Any]:
    """Pretrain (cached), base, planted control and RMU seeds of one world; returns its summary."""
    from rna_train.eval.loading import load_for_eval
    from rna_train.studies.miniature.experiment import Variant
    from rna_train.studies.miniature.pretrain import load_or_pretrain
    from rna_train.studies.miniature.textmetric import DEFAULT_SPEC, evaluate, excess_difference, text_data
    from rna_train.studies.miniature.world import WorldConfig

    t0 = time.perf_counter()
    base = load_or_pretrain(WorldConfig(**overrides), cache_dir=cache_dir, progress=False)
    data = text_data(base.world, **plan.get("heldout", {}))
    model, tokenizer = load_for_eval(str(base.path))
    root = out / name
    base_numbers, base_cells = cached(root / "base", lambda: evaluate(model, tokenizer, data, DEFAULT_SPEC))
    planted_numbers = {f"{scale:g}": headline(planted_control(model, tokenizer, data, base_cells,
                                                              int(plan["planted"]["layer"]), float(scale), root))
                       for scale in plan["planted"]["scales"]}
    method, runs = variant_runs(base, data, base_cells, plan, Variant.parse(plan["method"]), root)
    summary = {"world": base.world.config.to_dict(), "world_digest": base.world.config.digest(),
               "groups": data.groups, "pretrain": {k: base.meta[k] for k in ("seconds", "final_loss", "key")},
               "base": headline(base_numbers), "planted_layer": plan["planted"]["layer"], "planted": planted_numbers,
               **method, "rna": {}}
    for spec in plan.get("rna", []):
        variant = Variant.parse(spec)
        numbers, cells = variant_runs(base, data, base_cells, plan, variant, root)
        summary["rna"][variant.name] = {**numbers, "excess_minus_method": excess_difference(cells, runs, base_cells)}
    summary["diagnostics"] = diagnostics(base, data, model, tokenizer, base_cells, runs,
                                         root / plan["method"] / f"seed-{plan['seeds'][0]}" / "train" / "model")
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("%s: %s", name, {g: round(v["mean"], 3) for g, v in summary["pooled_excess"].items()})
    return summary


def variant_runs(base: BaseModel, data: Any, base_cells: Cells, plan: dict[str, Any], variant: Any,
                 root: Path) -> tuple[dict[str, Any], list[Cells]]:
    """Every seed of one unlearning variant: per-seed figures, excess pooled over seeds, chunks and
    keywords, and the change of held-out forget and retain NLL from the base model's (t-interval over
    seeds; the base evaluation in ``root/base`` must exist)."""
    from rna_train.studies.miniature.experiment import mean_ci
    from rna_train.studies.miniature.textmetric import DEFAULT_SPEC, pooled_excess

    runs = [unlearned(base, data, base_cells, variant, int(plan["steps"]), seed, root) for seed in plan["seeds"]]
    seeds = {str(s): headline(n) for s, (n, _) in zip(plan["seeds"], runs)}
    cells = [c for _, c in runs]
    out: dict[str, Any] = {"seeds": seeds, "pooled_excess": pooled_excess(cells, base_cells, DEFAULT_SPEC),
                           "pooled_excess_head": pooled_excess(cells, base_cells, DEFAULT_SPEC, metric="nll_head")}
    base_nll = headline(json.loads((root / "base" / "text.json").read_text()))
    for key in ("forget_nll", "retain_nll"):
        out[f"{key}_change"] = mean_ci([seeds[s][key] - base_nll[key] for s in seeds])
    return out, cells


def diagnostics(base: BaseModel, data: Any, model: Any, tokenizer: Any, base_cells: Cells, runs: list[Cells],
                unlearned_dir: Path) -> dict[str, Any]:
    """Where the excess sits and why: per suffix offset (mean over seeds), the layer-2 footprint of each
    group in the base and one unlearned model, and how unlearning moved layer 2 on held-out forget text."""
    import numpy as np

    from rna_train.eval.fragility import build_items
    from rna_train.eval.loading import load_for_eval
    from rna_train.studies.miniature.textmetric import (
        DEFAULT_SPEC,
        forget_state_change,
        offset_excess,
        state_profile,
        word_classes,
    )

    layer = int(DEFAULT_SPEC.layer or 2)
    profiles = [offset_excess(c, base_cells) for c in runs]
    offsets = {g: np.mean([p[g] for p in profiles], axis=0).round(4).tolist() for g in profiles[0]}
    unlearned_model, _ = load_for_eval(str(unlearned_dir))
    items = build_items(data.retain, tokenizer, DEFAULT_SPEC)[:32]
    footprint = {g: {name: state_profile(m, tokenizer, items, words, layer)
                     for name, m in (("base", model), ("unlearned", unlearned_model))}
                 for g, words in data.groups.items()}
    moved = forget_state_change(unlearned_model, model, tokenizer, data.forget[:32], layer, word_classes(base.world))
    return {"offset_excess": offsets, "layer": layer, "footprint_model": str(unlearned_dir),
            "footprint": footprint, "forget_text_state_change": moved}


def planted_control(model: Any, tokenizer: Any, data: Any, base_cells: Cells, layer: int, scale: float,
                    root: Path) -> dict[str, Any]:
    """The base model with a backdoor planted at ``layer`` (a vector of norm ``scale`` added from every trigger
    word on: markers and context words of the forget topics), measured against the base model."""
    from rna_train.eval.fragility import keyword_ids
    from rna_train.eval.planted import planted
    from rna_train.studies.miniature.textmetric import DEFAULT_SPEC, evaluate

    words = [w for g, ws in data.groups.items() if g.startswith("trigger") for w in ws]

    def compute() -> tuple[dict[str, Any], Cells]:
        with planted(model, layer, keyword_ids(tokenizer, words), scale):
            return evaluate(model, tokenizer, data, DEFAULT_SPEC, baseline=base_cells)

    numbers, _ = cached(root / f"planted-layer{layer}-scale{scale:g}", compute)
    return numbers


def unlearned(base: BaseModel, data: Any, base_cells: Cells, variant: Any, steps: int, seed: int,
              root: Path) -> tuple[dict[str, Any], Cells]:
    """Unlearn one variant with one seed (the real trainer; resumable) and evaluate the result."""
    from rna_train.eval.loading import load_for_eval
    from rna_train.studies.miniature.experiment import Schedule, unlearn
    from rna_train.studies.miniature.textmetric import DEFAULT_SPEC, evaluate

    run_dir = root / variant.name / f"seed-{seed}"
    torch.manual_seed(seed)
    model_dir = unlearn(base, variant, seed, run_dir / "train", Schedule(steps=steps))

    def compute() -> tuple[dict[str, Any], Cells]:
        model, tokenizer = load_for_eval(str(model_dir))
        return evaluate(model, tokenizer, data, DEFAULT_SPEC, baseline=base_cells)

    return cached(run_dir / "eval", compute)


def rounded(value: Any, digits: int = 4) -> Any:
    """``value`` with every float rounded to ``digits`` decimals (a compact committed summary)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def main() -> int:
    """Parse arguments, run every world, write the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None, help="pretrained base models (default ~/.cache/rna)")
    parser.add_argument("--out", type=Path, default=None, help="override the config's out")
    parser.add_argument("--summary", type=Path, default=None, help="override the config's summary path")
    parser.add_argument("--only", nargs="*", default=None, help="run only these worlds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    plan = yaml.safe_load(args.config.read_text())
    out = args.out or Path(plan["out"])
    start = time.perf_counter()
    worlds = {n: w for n, w in plan["worlds"].items() if not args.only or n in args.only}
    results = {n: run_world(n, w or {}, plan, out, args.cache_dir) for n, w in worlds.items()}
    summary_path = args.summary or Path(plan["summary"])
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"command": " ".join(sys.argv), "method": plan["method"], "seeds": plan["seeds"], "steps": plan["steps"],
               "seconds": round(time.perf_counter() - start, 1), "worlds": results}
    summary_path.write_text(json.dumps(rounded(summary), indent=1) + "\n")
    log.info("summary in %s (%.0f s)", summary_path, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
