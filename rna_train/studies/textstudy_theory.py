"""Setting 5 of ``rna theory check``: the SmolLM2 keyword-fragility study, read from its summaries.

Why: claims C7 and C8 are about real unlearned LLMs; the study (experiments/smollm2/, hours of CPU)
measures them, and this setting turns its committed results into rows of the same table:

* C8 (i): plain RMU's excess NLL after a forget-corpus word over the base model, at the evaluation
  step where the pooled excess is largest (predicted > 0), and the control words' excess there
  (predicted 0);
* C8 (ii): each RNA variant minus plain RMU at equal held-out forget NLL (predicted < 0), at the
  level reached by the most runs;
* C7: the tuner's first-order prediction of the unchanged-prediction share for target-mode RNA
  against the share measured on the RNA-trained model (experiments/smollm2/theory.py).

Files: ``$RNA_STUDY_SUMMARY`` (default ``docs/data/smollm2_summary.json``) and
``$RNA_STUDY_THEORY`` (default ``docs/data/smollm2_theory.json``), relative to the working
directory. Intervals are the study's 95 % bootstrap intervals (seeds x chunks x keywords), not the
registry's 1 - 1e-6 level; every row says so. Nothing is trained or evaluated here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from rna_theory.claims import Budget, ClaimResult, claim, register_setting
from rna_theory.errors import RNAError
from rna_theory.settings import Setting

SETTING = 5
LEVEL_NOTE = "95% bootstrap interval over seeds, chunks and keywords (the study's), not the registry's 1e-6 level"


@dataclasses.dataclass
class StudySetting(Setting):
    """Setting 5: the study's summary documents, read on first use."""

    docs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def load(self, key: str, env: str, default: str) -> Any:
        """The JSON document ``$env`` (or ``default``), with a clear error when it is missing."""
        if key not in self.docs:
            path = Path(os.environ.get(env, default))
            if not path.is_file():
                raise RNAError("the SmolLM2 study summary is missing", where=str(path),
                               fix=f"run experiments/smollm2/study.py (see docs/results.md) or set {env}")
            self.docs[key] = json.loads(path.read_text())
        return self.docs[key]

    def summary(self) -> dict[str, Any]:
        """``study.py summary``'s document."""
        return self.load("summary", "RNA_STUDY_SUMMARY", "docs/data/smollm2_summary.json")

    def theory(self) -> list[dict[str, Any]]:
        """``experiments/smollm2/theory.py``'s document."""
        return self.load("theory", "RNA_STUDY_THEORY", "docs/data/smollm2_theory.json")


def _no_head(_z: torch.Tensor) -> torch.Tensor:
    raise RNAError("setting 5 has no closed-form head", where="setting 5", fix="its rows read the study's results")


def build(seed: int) -> StudySetting:
    """Setting 5 factory (the seed is unused: the study fixed its own)."""
    empty = torch.zeros((0, 576), dtype=torch.float64)
    return StudySetting(SETTING, "smollm2-text-study", 576, empty, torch.zeros(0, dtype=torch.long), _no_head,
                        "next-token", lambda *_: (empty, empty))


register_setting(SETTING, build)


def _sign_verdict(iv: dict[str, Any], expected: str) -> str:
    """holds if the interval is on the expected side of 0, violated if on the other, else inconclusive."""
    above, below = iv["low"] > 0, iv["high"] < 0
    if expected == "positive":
        return "holds" if above else "violated" if below else "inconclusive"
    return "holds" if below else "violated" if above else "inconclusive"


@claim("C8", settings=(SETTING,))
def backdoor_rows(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """C8 (i) and (ii) from the study summary (see the module docstring)."""
    assert isinstance(setting, StudySetting)
    doc = setting.summary()
    plain = [r for r in doc["pooled"] if r["variant"] == "rmu"]
    if not plain:
        raise RNAError("the study summary has no plain RMU rows", where="RNA_STUDY_SUMMARY",
                       fix="run the study's rmu variant, then study.py summary")
    top = max(plain, key=lambda r: r["excess"]["forget"]["mean"])
    rows = []
    for group, expected, predicted in (("forget", "positive", None), ("control", "zero", 0.0)):
        iv = top["excess"][group]
        verdict = (_sign_verdict(iv, "positive") if expected == "positive"
                   else "holds" if iv["low"] <= 0.0 <= iv["high"] else "violated")
        rows.append(ClaimResult(
            "C8", SETTING, f"(i) rmu step {top['step']}: {group}-word excess NLL over base (nats/token)",
            predicted, iv["mean"], (iv["low"], iv["high"]), verdict,
            f"{len(top['seeds'])} seeds, forget NLL {top['forget_nll']:.2f}; {LEVEL_NOTE}"))
    for variant in dict.fromkeys(r["variant"] for r in doc["matched"] if r["group"] == "forget"):
        cands = [r for r in doc["matched"] if r["variant"] == variant and r["group"] == "forget"]
        best = max(cands, key=lambda r: (sum(r["seeds"]), r["forget_nll"]))
        iv = best["difference"]
        rows.append(ClaimResult(
            "C8", SETTING,
            f"(ii) {variant} - {best['reference']}: forget excess at forget NLL {best['forget_nll']:.1f}",
            None, iv["mean"], (iv["low"], iv["high"]), _sign_verdict(iv, "negative"),
            f"RNA predicted to lower the excess (< 0); runs {best['seeds'][0]}/{best['seeds'][1]}; {LEVEL_NOTE}"))
    return rows


@claim("C7", settings=(SETTING,))
def tuner_rows(setting: Setting, budget: Budget) -> list[ClaimResult]:
    """C7: predicted (first order) vs measured unchanged share for target-mode RNA variants."""
    assert isinstance(setting, StudySetting)
    rows = []
    for doc in setting.theory():
        for r in doc["rows"]:
            if r["measured"] is None:
                continue
            gap = abs(r["first_order"] - r["measured"])
            rows.append(ClaimResult(
                "C7", SETTING, f"{r['variant']}: first-order P(unchanged) vs measured (step {doc['step']})",
                r["first_order"], r["measured"], None, "approximate" if gap <= 0.05 else "violated",
                f"eta {doc['eta']:.3g} at layer 6, d {doc['dim']}, median margin {doc['median_margin']:.2f}; "
                f"certified {r['certified']:.3g}; agreement within 0.05 counts as approximate (no interval: "
                "the measured share is a mean over seeds, chunks and keywords)"))
    return rows
