"""Theory against measurement on SmolLM2 (issue 11, item 3): the tuner's predictions vs the study's runs.

For each RNA mode of the study plan, at one evaluation step:

* the *inputs* of the theory come from the plain (no-RNA) unlearned model: the layer-l state changes
  caused by forget keywords at the first scored suffix positions (``eval-step-N.latents-forget.npz``,
  Assumption 1's eps) and the clean next-token probit margins there (the retain margins);
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

import numpy as np

from rna_theory.tuner import tune_from_file
from rna_train.textstudy import load_plan

HERE = Path(__file__).resolve().parent


def measured(out: Path, variant: str, seeds: list[int], step: int, group: str = "forget") -> float | None:
    """Mean over seeds of the measured unchanged-prediction share (first suffix tokens) of ``group``."""
    values = []
    for seed in seeds:
        path = out / variant / f"seed-{seed}" / f"eval-step-{step}.json"
        if path.is_file():
            frag = json.loads(path.read_text())["fragility"]
            if "unchanged" in frag:
                values.append(frag["unchanged"]["head"][group]["mean"])
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


def compare(plan: object, step: int, mode: str) -> dict | None:
    """Predicted vs measured robustness for every variant of ``mode`` (see the module docstring)."""
    out = Path(plan.out)
    plain = next(v for v in plan.variants if plan.variant(v).rna == "off")
    latents = out / plain / f"seed-{plan.variant(plain).seeds[0]}" / f"eval-step-{step}.latents-forget.npz"
    base = json.loads((out / "base" / "eval.json").read_text())["fragility"]
    if not latents.is_file() or "unchanged" not in base:
        logging.warning("missing %s or base predictions: rerun the study first", latents)
        return None
    names = sorted((v for v in plan.variants if plan.variant(v).rna == mode), key=lambda v: plan.variant(v).nu)
    nus = [plan.variant(v).nu for v in names]
    target = base["unchanged"]["head"]["forget"]["mean"]
    result = {crit: tune_from_file(latents, target=target, nus=np.array(nus), relative=True, criterion=crit)
              for crit in ("certified", "first-order")}
    meas = [measured(out, v, plan.variant(v).seeds, step) for v in names]
    rows = [{"variant": v, "nu_relative": nu, "certified": c.certified, "first_order": f.first_order,
             "measured": m} for v, nu, c, f, m in zip(names, nus, result["certified"].rows,
                                                       result["first-order"].rows, meas)]
    return {"mode": mode, "step": step, "target_base_unchanged": target,
            "plain_unchanged": measured(out, plain, plan.variant(plain).seeds, step), "rows": rows,
            "recommended_nu_relative": {k: r.recommended_nu_relative for k, r in result.items()},
            "measured_nu_relative_at_target": crossing(nus, meas, target),
            "eta": result["certified"].eta, "dim": result["certified"].dim, "latents": str(latents)}


def main() -> int:
    """Compare per RNA mode and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=HERE / "study.yaml")
    parser.add_argument("--step", type=int, default=150)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = load_plan(args.plan)
    docs = [d for mode in ("target", "input") if (d := compare(plan, args.step, mode)) is not None]
    lines = ["| mode | nu / RMS | predicted certified | predicted first-order | measured (RNA-trained) |",
             "|---|---|---|---|---|"]
    for d in docs:
        lines += [f"| {d['mode']} | {r['nu_relative']} | {r['certified']:.3f} | {r['first_order']:.3f} | "
                  + (f"{r['measured']:.3f}" if r["measured"] is not None else "not run") + " |" for r in d["rows"]]
        lines.append(f"| {d['mode']}: target (base) {d['target_base_unchanged']:.3f}, plain RMU "
                     f"{d['plain_unchanged']} | recommended {d['recommended_nu_relative']} | | | measured crossing "
                     f"{d['measured_nu_relative_at_target']} |")
    path = args.out or Path(plan.out) / "theory.json"
    path.write_text(json.dumps(docs, indent=1) + "\n", encoding="utf-8")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
