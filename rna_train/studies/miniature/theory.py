"""Setting 4 of the theory (tiny causal transformer in the miniature world) for ``rna theory check``.

Importing this module registers setting 4 with :mod:`rna_theory.claims` and its verifiers for C1,
C6, C7 and C8. The verifiers share one experiment per check (built lazily on first use): the cached
base model (pretrained once, about a minute), then RMU and NPO with and without RNA, several seeds,
each unlearned with the real trainer and measured with the real ``rna eval`` / ``rna audit`` in a
temporary folder. ``--quick`` uses 2 seeds and shorter unlearning.

Intervals: measured rates over questions carry Clopper-Pearson intervals at the registry's level
(1 - 1e-6); quantities compared *across seeds* (C8) carry 95% Student-t intervals over seeds, as
3 seeds cannot support a 1e-6 level. Each row's detail says which.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from typing import Any

import numpy as np
import torch

from rna_theory.claims import Budget, ClaimResult, claim, register_setting
from rna_theory.errors import RNAError
from rna_theory.settings import Setting
from rna_theory.stats import FALSE_FAILURE, clopper_pearson
from rna_train.studies.miniature.experiment import Results, Schedule, Variant, mean_ci, run_grid
from rna_train.studies.miniature.pretrain import load_or_pretrain

log = logging.getLogger(__name__)

#: RNA noise std (absolute, at the method layer) used by the setting-4 runs.
NU = 0.5
VARIANTS = (Variant("rmu"), Variant("rmu", "target", NU), Variant("rmu", "input", NU),
            Variant("npo"), Variant("npo", "target", NU), Variant("npo", "input", NU))
#: ``--quick``: one RNA mode per method, 2 seeds, 40 unlearning steps (about a minute after the cache).
QUICK_VARIANTS = (Variant("rmu"), Variant("rmu", "input", NU), Variant("npo"), Variant("npo", "input", NU))


def _no_head(_z: torch.Tensor) -> torch.Tensor:
    raise RNAError("setting 4 has no closed-form head", where="setting 4",
                   fix="its verifiers use the trained transformers (rna_train.studies.miniature.theory)")


@dataclasses.dataclass
class MiniatureSetting(Setting):
    """Setting 4: the generated world's tiny Llama; experiments run on first use, once per budget."""

    seed: int = 0
    runs: dict[bool, Results] = dataclasses.field(default_factory=dict)

    def results(self, budget: Budget) -> Results:
        """Run (once per ``quick`` flag) base + VARIANTS over the seeds in a temporary folder."""
        if budget.quick not in self.runs:
            seeds = list(range(self.seed, self.seed + (2 if budget.quick else 3)))
            schedule = Schedule(steps=40 if budget.quick else Schedule().steps, retain_evals=False)
            base = load_or_pretrain(progress=False)
            variants = QUICK_VARIANTS if budget.quick else VARIANTS
            with tempfile.TemporaryDirectory(prefix="rna-setting4-") as tmp:
                self.runs[budget.quick] = run_grid(base, variants, seeds, tmp, schedule=schedule,
                                                   progress=lambda m: log.info("setting 4: %s", m))
        return self.runs[budget.quick]


def build(seed: int) -> MiniatureSetting:
    """Setting 4 factory: the retain probe's answers as labels; latents come from the runs."""
    empty = torch.zeros((0, 64), dtype=torch.float64)
    return MiniatureSetting(4, "miniature-transformer", 64, empty, torch.zeros(0, dtype=torch.long), _no_head,
                            "classification", lambda *_: (empty, empty), seed=seed)


register_setting(4, build)


def _runs(results: Results, variant: str) -> list[dict[str, Any]]:
    return results.by_variant().get(variant, [])


def _pooled_rate(rows: list[dict[str, Any]], key: str) -> tuple[float, tuple[float, float], int]:
    """Rate pooled over seeds (each run's ``n_questions``) with a Clopper-Pearson interval at 1 - 1e-6."""
    k = round(sum(r[key] * r["n_questions"] for r in rows))
    n = int(sum(r["n_questions"] for r in rows))
    return k / n, clopper_pearson(k, n, FALSE_FAILURE), n


@claim("C1", settings=(4,))
def trigger_latents(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """Assumption 1 on a transformer: the trigger's latent effect, base vs unlearned vs control."""
    assert isinstance(setting, MiniatureSetting)
    res = setting.results(budget)
    rows: list[ClaimResult] = []
    for variant in ("base", "rmu", "npo"):
        runs = _runs(res, variant)
        if not runs:
            continue
        for kind in ("trigger", "control"):
            eta = mean_ci([r[f"eta_{kind}"] for r in runs])
            shift = mean_ci([r[f"mean_norm_{kind}"] / (r[f"eta_{kind}"] * math.sqrt(r["dim"])) for r in runs])
            rows.append(ClaimResult(
                "C1", 4, f"{variant}: {kind} eta at layer 2 (offset alignment)", None, eta["mean"],
                (eta["lo"], eta["hi"]), "holds",
                f"measurement; 95% t interval over {eta['n']} seeds; ||mu|| / (eta sqrt d) = {shift['mean']:.2f} "
                "(Assumption 1: 0; a value near or above 1 means the effect is mostly a deterministic shift)"))
        ratio = mean_ci([r["eta_trigger"] / r["eta_control"] for r in runs])
        rows.append(ClaimResult(
            "C1", 4, f"{variant}: eta(trigger) / eta(control)", 1.0 if variant == "base" else None,
            ratio["mean"], (ratio["lo"], ratio["hi"]),
            "holds" if variant != "base" or ratio["lo"] <= 1.0 <= ratio["hi"] else "approximate",
            "base: triggers and control words are symmetric by construction (ratio 1 expected); "
            "unlearned: a ratio above 1 is the backdoor's latent footprint"))
    return rows


def _prediction_rows(claim_id: str, setting: MiniatureSetting, budget: Budget) -> list[ClaimResult]:
    res = setting.results(budget)
    rows: list[ClaimResult] = []
    for variant in dict.fromkeys(VARIANTS + QUICK_VARIANTS):
        runs = _runs(res, variant.name)
        if variant.rna == "off" or not runs:
            continue
        key = "predicted_certified_trigger" if claim_id == "C6" else "predicted_first_order_trigger"
        preds = [r[key] for r in runs if r.get(key) is not None]
        if not preds:
            rows.append(ClaimResult(claim_id, 4, f"{variant.name}: prediction", None, None, None, "inconclusive",
                                    "the audit made no prediction (nu unknown)"))
            continue
        predicted = float(np.mean(preds))
        measured, ci, n = _pooled_rate(runs, "unchanged_trigger")
        if claim_id == "C6":
            verdict = "violated" if ci[1] < predicted else "holds"
            detail = (f"certified chi-square bound F(R^2/eta^2) at nu={variant.nu}, d=64, from the checkpoint's "
                      f"margins and measured eta, vs the unchanged-prediction rate ({n} trigger-perturbed retain "
                      "questions pooled over seeds, Clopper-Pearson 1-1e-6); the checkpoint stands in for the "
                      "smoothed head and the trigger is not Gaussian, so this is a check of the approximation")
        else:
            verdict = "approximate" if abs(predicted - measured) <= 0.1 else "violated"
            detail = (f"first-order Phi(nu g / eta) at nu={variant.nu} vs measured unchanged rate ({n} questions); "
                      "rule: within 0.1")
        label = "certified bound <= P(unchanged)" if claim_id == "C6" else "first-order prediction"
        rows.append(ClaimResult(claim_id, 4, f"{variant.name}: {label}", predicted, measured, ci, verdict, detail))
        last = [r["predicted_first_order_last_trigger"] for r in runs
                if r.get("predicted_first_order_last_trigger") is not None]
        if claim_id == "C7" and last:
            pred_last = float(np.mean(last))
            eta_last = float(np.mean([r["eta_last_trigger"] for r in runs]))
            rows.append(ClaimResult(
                "C7", 4, f"{variant.name}: first order, last-token eta", pred_last, measured, ci,
                "approximate" if abs(pred_last - measured) <= 0.1 else "violated",
                "same prediction with eta measured at the answer position (last token) instead of the offset "
                f"alignment's average over all tokens after the keyword (mean eta {eta_last:.3g}); "
                "rule: within 0.1"))
    return rows


@claim("C6", settings=(4,))
def certified_vs_measured(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """C6(b) on a transformer: certified probability vs the measured unchanged rate of RNA models."""
    assert isinstance(setting, MiniatureSetting)
    return _prediction_rows("C6", setting, budget)


@claim("C7", settings=(4,))
def first_order_vs_measured(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """C7 on a transformer: the tuner's first-order prediction at the run's nu vs measurement."""
    assert isinstance(setting, MiniatureSetting)
    return _prediction_rows("C7", setting, budget)


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key_a: str, key_b: str) -> dict[str, float]:
    """Mean and 95% t interval over seeds of a[key_a] - b[key_b], paired by seed."""
    by_seed = {r["seed"]: r for r in b}
    return mean_ci([r[key_a] - by_seed[r["seed"]][key_b] for r in a if r["seed"] in by_seed])


#: Smallest accuracy drop (5 points) that C8 (i) calls a backdoor; the paper's is several times larger.
MIN_BACKDOOR = 0.05


def _verdict(ci: dict[str, float], floor: float = 0.0) -> str:
    """holds: interval above 0; violated: interval below ``floor`` (the effect is absent at that size)."""
    if ci["n"] < 2:
        return "inconclusive"
    if ci["lo"] > 0:
        return "holds"
    return "violated" if ci["hi"] < floor else "inconclusive"


@claim("C8", settings=(4,))
def backdoor(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """(i) trigger drop of the unlearned model vs base and vs control; (ii) RNA reduces it;
    (iii) predicted vs measured robustness side by side."""
    assert isinstance(setting, MiniatureSetting)
    res = setting.results(budget)
    base = _runs(res, "base")
    rows: list[ClaimResult] = []
    note = "95% t interval over seeds (paired by seed)"
    for method in ("rmu", "npo"):
        plain = _runs(res, method)
        if not plain:
            continue
        d = _paired(plain, base, "drop_trigger", "drop_trigger")
        rule = (f"holds if the interval is above 0, violated if it is below {MIN_BACKDOOR} (no backdoor of "
                f"{MIN_BACKDOOR:.0%} accuracy or more)")
        rows.append(ClaimResult("C8", 4, f"(i) {method}: trigger drop - base model's trigger drop", MIN_BACKDOOR,
                                d["mean"], (d["lo"], d["hi"]), _verdict(d, MIN_BACKDOOR),
                                f"predicted: a drop (backdoor); {note}; {rule}"))
        d = _paired(plain, plain, "drop_trigger", "drop_control")
        rows.append(ClaimResult("C8", 4, f"(i) {method}: trigger drop - control-word drop", MIN_BACKDOOR, d["mean"],
                                (d["lo"], d["hi"]), _verdict(d, MIN_BACKDOOR),
                                f"predicted: a trigger-specific drop; {note}; {rule}"))
        for variant in dict.fromkeys(VARIANTS + QUICK_VARIANTS):
            noisy = _runs(res, variant.name)
            if variant.method != method or variant.rna == "off" or not noisy:
                continue
            d = _paired(plain, noisy, "drop_trigger", "drop_trigger")
            cost = _paired(noisy, plain, "retain", "retain")
            forget = _paired(noisy, plain, "forget", "forget")
            rows.append(ClaimResult(
                "C8", 4, f"(ii) {variant.name}: trigger drop without RNA - with RNA", 0.0, d["mean"],
                (d["lo"], d["hi"]), _verdict(d),
                f"predicted > 0 (RNA reduces the drop); {note}; side effects (RNA - plain): clean retain "
                f"{cost['mean']:+.3f}, forget accuracy {forget['mean']:+.3f}"))
            preds = [r["predicted_first_order_trigger"] for r in noisy if r.get("predicted_first_order_trigger")]
            if preds:
                measured, ci, n = _pooled_rate(noisy, "unchanged_trigger")
                pred = float(np.mean(preds))
                rows.append(ClaimResult(
                    "C8", 4, f"(iii) {variant.name}: predicted vs measured P(unchanged)", pred, measured, ci,
                    "approximate" if abs(pred - measured) <= 0.1 else "violated",
                    f"first-order C6/C7 prediction from measured eta and margins; {n} questions pooled, "
                    "Clopper-Pearson 1-1e-6; rule: within 0.1"))
    return rows
