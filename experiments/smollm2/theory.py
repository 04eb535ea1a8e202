"""Theory against measurement on SmolLM2 (issue 11, item 3): the tuner's predictions vs the study's runs.

For RMU's target-mode variants (noise at the unlearning layer, where the latents are recorded), at
one evaluation step:

* the *inputs* of the theory come from the plain (no-RNA) unlearned model: the layer-l state changes
  caused by forget keywords at the first scored suffix positions (``eval-step-N.latents-forget.npz``,
  Assumption 1's eps) and the clean probit margins of the predictions made from those states (the
  retain margins);
* ``rna_theory.tuner.tune`` predicts, per nu of the plan's variants (a fraction of the layer RMS),
  the share of positions whose prediction a forget keyword leaves unchanged (C6b certified, and
  first-order), and recommends the smallest nu reaching a target;
* the *measurement* is the same share on the model trained with RNA at that nu (``unchanged`` head
  share of the forget group, mean over seeds), and for the plain model and the base model;
* the target is the base model's measured share (robustness as before unlearning): the tuner's
  recommended nu is compared with the nu at which the measured curve reaches it (interpolated).

Prints a Markdown table and writes ``--out`` JSON (default runs/study/theory.json).

    python experiments/smollm2/theory.py --step 150
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from rna_theory.tuner import tune_from_file
from rna_train.eval.fragility import Cells
from rna_train.eval.robustness import P_CLIP
from rna_train.studies.textstudy import load_plan

HERE = Path(__file__).resolve().parent
#: The largest probit margin with probabilities clipped to [P_CLIP, 1 - P_CLIP] (evaluations recorded
#: before margins were clipped there are capped to it: an approximation for the few near-certain positions).
MAX_MARGIN = float(ndtri(1 - P_CLIP))


def unchanged_share(path: Path, head: int, group: str = "forget") -> float | None:
    """Share of unchanged predictions of tokens 1..head for ``group``'s keywords in one cells file (the
    positions the latent rows predict); None if the file is missing or predates recorded predictions."""
    cells = Cells.load(path) if path.is_file() else None
    share = cells.unchanged(head) if cells is not None else None
    return None if share is None else float(np.nanmean(share[:, cells.columns(group)]))


def measured(out: Path, variant: str, seeds: list[int], step: int, head: int, group: str = "forget") -> float | None:
    """Mean over seeds of :func:`unchanged_share` of ``variant`` at ``step``."""
    values = [v for seed in seeds if (v := unchanged_share(
        out / variant / f"seed-{seed}" / f"eval-step-{step}.cells.npz", head, group)) is not None]
    return float(np.mean(values)) if values else None


def theory_inputs(out: Path, variant: str, seeds: list[int], step: int, head: int) -> tuple[Path, np.ndarray] | None:
    """Latents file and clean margins (tokens 1..head, clipped at the npz contract) of the first seed of
    ``variant`` whose evaluation recorded predictions."""
    for seed in seeds:
        stem = out / variant / f"seed-{seed}" / f"eval-step-{step}"
        path = Path(f"{stem}.cells.npz")
        cells = Cells.load(path) if path.is_file() else None
        if cells is not None and cells.clean_margin is not None:
            return Path(f"{stem}.latents-forget.npz"), np.minimum(cells.clean_margin[:, 1:head + 1].ravel(), MAX_MARGIN)
    return None


def forget_nll(out: Path, variant: str, seeds: list[int], step: int) -> float | None:
    """Mean held-out forget NLL of ``variant`` at ``step`` over the evaluated seeds (how unlearned it is)."""
    values = [json.loads(p.read_text())["forget_heldout"]["nll"] for seed in seeds
              if (p := out / variant / f"seed-{seed}" / f"eval-step-{step}.json").is_file()]
    return float(np.mean(values)) if values else None


def crossing(nus: list[float], values: list[float | None], target: float) -> float | None:
    """Smallest nu at which the piecewise-linear curve (nu, value) reaches ``target``; None if never."""
    pts = [(n, v) for n, v in zip(nus, values) if v is not None]
    if pts and pts[0][1] >= target:
        return pts[0][0]
    for (n0, v0), (n1, v1) in zip(pts, pts[1:]):
        if v0 < target <= v1:
            return n0 + (target - v0) / (v1 - v0) * (n1 - n0)
    return None


def compare(plan: Any, step: int, method: str = "rmu") -> dict | None:
    """Predicted vs measured robustness for the target-mode variants of ``method`` (see the module docstring).

    Only target mode is compared: its noise is added at the unlearning layer, where the latents are
    recorded; input-mode noise enters at another layer (rna_layer), where no latents are recorded."""
    out = Path(plan.out)
    head = plan.spec().head_tokens
    plain = next(v for v in plan.variants if plan.variant(v).rna == "off" and plan.variant(v).method == method)
    inputs = theory_inputs(out, plain, plan.variant(plain).seeds, step, head)
    target = unchanged_share(out / "base" / "eval.cells.npz", head)  # the base model's robustness
    if inputs is None or target is None:
        logging.warning("no evaluation of %s at step %d (or of base) recorded predictions: run the study", plain, step)
        return None
    latents, margins = inputs
    names = sorted((v for v in plan.variants if plan.variant(v).rna == "target" and plan.variant(v).method == method),
                   key=lambda v: plan.variant(v).nu)
    nus = [plan.variant(v).nu for v in names]
    result = {crit: tune_from_file(latents, target=target, margins=margins, nus=np.array(nus), relative=True,
                                   criterion=crit) for crit in ("certified", "first-order")}
    meas = [measured(out, v, plan.variant(v).seeds, step, head) for v in names]
    rows = [{"variant": v, "nu_relative": nu, "certified": c.certified, "first_order": f.first_order,
             "measured": m, "forget_nll": forget_nll(out, v, plan.variant(v).seeds, step)}
            for v, nu, c, f, m in zip(names, nus, result["certified"].rows, result["first-order"].rows, meas)]
    return {"method": method, "mode": "target", "step": step, "target_base_unchanged": target,
            "plain_unchanged": measured(out, plain, plan.variant(plain).seeds, step, head), "rows": rows,
            "recommended_nu_relative": {k: r.recommended_nu_relative for k, r in result.items()},
            "measured_nu_relative_at_target": crossing(nus, meas, target),
            "eta": result["certified"].eta, "dim": result["certified"].dim, "latents": str(latents),
            "median_margin": float(np.median(margins))}


def main() -> int:
    """Compare per RNA mode and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--step", type=int, default=150)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = load_plan(args.plan)
    docs = [d for d in [compare(plan, args.step)] if d is not None]
    lines = ["| variant | nu / RMS | forget NLL | predicted certified | predicted first-order "
             "| measured (RNA-trained) |",
             "|---|---|---|---|---|---|"]
    for d in docs:
        lines += [f"| {r['variant']} | {r['nu_relative']} | "
                  + (f"{r['forget_nll']:.2f}" if r["forget_nll"] is not None else "-")
                  + f" | {r['certified']:.3f} | {r['first_order']:.3f} | "
                  + (f"{r['measured']:.3f}" if r["measured"] is not None else "not run") + " |" for r in d["rows"]]
        lines.append(f"\ntarget = base model's measured share {d['target_base_unchanged']:.3f}; plain RMU "
                     f"{d['plain_unchanged']}; eta {d['eta']:.3g}, d {d['dim']}, median margin "
                     f"{d['median_margin']:.3f}; recommended nu/RMS {d['recommended_nu_relative']}; measured "
                     f"curve reaches the target at nu/RMS {d['measured_nu_relative_at_target']}")
    path = args.out or Path(plan.out) / "theory.json"
    path.write_text(json.dumps(docs, indent=1) + "\n", encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
