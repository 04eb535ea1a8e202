"""Unlearning experiments in the miniature world: the real trainer and the real evaluator, end to end.

Why this module exists: claim C8 (the backdoor view) and the C1/C6/C7 checks on a transformer need
the *same* code path a 7B run uses. Each run here writes a trainer config (``config.yaml``), calls
:func:`rna_train.trainer.train`, then runs ``rna eval`` (forget probe; retain probe with trigger and
with control words inserted) and ``rna audit`` (C1 estimators, predicted vs measured robustness)
through the CLI entry point, so every run directory is one that ``rna report`` reads.

Layout of ``out_dir``::

    base/seed-S/{eval-forget,eval-trigger,eval-control,audit}/
    <method>-<rna>[-nu]/seed-S/{config.yaml,model/,metrics.jsonl,eval-*/,audit/}
    summary.json

A *variant* is (method, RNA mode, nu); a *run* is a variant with a seed. The seed drives the
unlearning (random vector u, batches, noise) and the positions of the inserted keywords.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rna_theory.errors import RNAError
from rna_theory.plotting import save_figure
from rna_train.studies.miniature.pretrain import BaseModel

log = logging.getLogger(__name__)

#: Per-method unlearning options for the miniature world (4-layer, d=64 Llama; loss layer 2).
#: Values were chosen so forget accuracy falls towards chance while clean retain accuracy stays.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "rmu": {"name": "rmu", "layer": 2, "alpha": 100.0, "steering_coef": 40.0},
    "adaptive_rmu": {"name": "adaptive_rmu", "layer": 2, "alpha": 100.0, "beta": 3.0},
    "rsv": {"name": "rsv", "layer": 2, "alpha": 100.0, "steering_coef": 40.0},
    "npo": {"name": "npo", "layer": 2, "alpha": 1.0, "beta": 0.1, "retain_loss": "kl"},
    "simnpo": {"name": "simnpo", "layer": 2, "alpha": 1.0, "beta": 0.1, "retain_loss": "kl"},
    "graddiff": {"name": "graddiff", "layer": 2, "alpha": 1.0},
}
#: Learning rate per method (RM methods move activations; PO methods move output likelihoods).
METHOD_LR: dict[str, float] = {"rmu": 5e-3, "adaptive_rmu": 5e-3, "rsv": 5e-3, "npo": 1e-2, "simnpo": 1e-2,
                               "graddiff": 1e-3}


@dataclasses.dataclass(frozen=True)
class Variant:
    """An unlearning method with an RNA mode (off, target, input) and noise std nu."""

    method: str
    rna: str = "off"
    nu: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHOD_OPTIONS:
            raise RNAError(f"no miniature recipe for method {self.method!r}", where="variant",
                           fix=f"use one of {', '.join(METHOD_OPTIONS)}")
        if self.rna not in ("off", "target", "input"):
            raise RNAError(f"unknown RNA mode {self.rna!r}", where="variant", fix="use off, target or input")
        if self.rna != "off" and not self.nu > 0:
            raise RNAError(f"RNA mode {self.rna} needs nu > 0, got {self.nu}", where="variant",
                           fix="give a positive noise std")

    @property
    def name(self) -> str:
        """Folder name and label, e.g. ``rmu``, ``rmu-target-0.5``."""
        return self.method if self.rna == "off" else f"{self.method}-{self.rna}-{self.nu:g}"

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """``METHOD`` or ``METHOD:MODE:NU`` (e.g. ``npo:target:0.3``)."""
        parts = spec.split(":")
        if len(parts) == 1:
            return cls(parts[0])
        if len(parts) != 3:
            raise RNAError(f"cannot parse variant {spec!r}", where="variants", fix="write METHOD or METHOD:MODE:NU")
        try:
            nu = float(parts[2])
        except ValueError:
            raise RNAError(f"nu {parts[2]!r} is not a number", where="variants",
                           fix="write e.g. rmu:target:0.5") from None
        return cls(parts[0], parts[1], nu)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Unlearning length and evaluation sizes (``quick`` shrinks them for tests and smoke checks)."""

    steps: int = 150
    batch_size: int = 8
    max_length: int = 64
    eval_batch_size: int = 64
    retain_evals: bool = True


def run_config(base: BaseModel, variant: Variant, seed: int, out: Path, schedule: Schedule) -> dict[str, Any]:
    """The trainer config (as YAML data) of one run."""
    files = base.files
    cfg: dict[str, Any] = {
        "output_dir": str(out), "seed": seed,
        "model": {"name_or_path": str(base.path), "dtype": "fp32"},
        "data": {"forget": [{"name": name, "path": str(path)} for name, path in files.forget.items()],
                 "retain": {"name": "retain", "path": str(files.retain)},
                 "max_length": schedule.max_length, "min_length": 2},
        "method": dict(METHOD_OPTIONS[variant.method]),
        "rna": {"mode": variant.rna, "noise": variant.nu if variant.rna != "off" else 0.0},
        "train": {"steps": schedule.steps, "batch_size": schedule.batch_size, "lr": METHOD_LR[variant.method],
                  "checkpoint_every": 0, "log_every": max(1, schedule.steps // 4), "progress": False},
    }
    return cfg


@dataclasses.dataclass(frozen=True)
class Probes:
    """What a model is evaluated on: forget and retain probes, trigger and control keyword lists."""

    forget: Path
    retain: Path
    triggers: str
    control: str
    sample: int | None = None


def miniature_probes(base: BaseModel) -> Probes:
    """The miniature world's probes and keyword files."""
    files = base.files
    return Probes(files.forget_probe, files.retain_probe, str(files.triggers), str(files.control))


def evaluate_model(model_dir: Path, probes: Probes, out: Path, seed: int, *, layer: int, label: str,
                   batch_size: int = 64, retain_evals: bool = True) -> dict[str, Any]:
    """``rna eval`` (forget; retain + triggers; retain + control) and ``rna audit``; returns the numbers.

    The audit measures clean and perturbed retain accuracy for both keyword lists itself, so
    ``retain_evals=False`` skips the two retain ``rna eval`` runs (same numbers; saves model time on
    large models; the report then has no per-question retain predictions).
    """
    from rna_train.eval.auditrun import AuditSpec, noise_from_run, run_audit
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.probeeval import perturbation_plan, run_probe_eval, select_questions
    from rna_train.eval.probes import file_sha256

    model, tokenizer = load_for_eval(str(model_dir))
    opts = {"scorings": ["loglik"], "batch_size": batch_size}

    def info(probe: Path, run_label: str) -> dict[str, Any]:
        return {"label": run_label, "model": str(model_dir), "probe": str(probe), "probe_sha256": file_sha256(probe),
                "subjects": None, "sample": probes.sample, "limit": None}

    forget = select_questions(probes.forget, sample=probes.sample, seed=seed)
    run_probe_eval(model, tokenizer, forget, out=out / "eval-forget", info=info(probes.forget, label), **opts)
    retain = select_questions(probes.retain, sample=probes.sample, seed=seed)
    for kind, words in (("trigger", probes.triggers), ("control", probes.control)) if retain_evals else ():
        pairs, perturbation = perturbation_plan(retain, words, mode="insert", seed=seed)
        run_probe_eval(model, tokenizer, retain, out=out / f"eval-{kind}", pairs=pairs, perturbation=perturbation,
                       info=info(probes.retain, f"{label} [{kind}]"), **opts)
    lists = [resolve_keywords(probes.triggers), resolve_keywords(probes.control)]
    audit_info = {key: value for key, value in info(probes.retain, label).items() if key != "label"}
    sources = {kind: source for (kind, _), source in zip(lists, (probes.triggers, probes.control), strict=True)}
    run_audit(model, tokenizer, retain, lists, AuditSpec(layer=layer, seed=seed, batch_size=batch_size),
              out / "audit", noise=noise_from_run(model_dir, out / "audit"), info=audit_info, sources=sources)
    return collect_numbers(out)


def collect_numbers(out: Path) -> dict[str, Any]:
    """The numbers of one evaluated run directory (read back from eval.json / audit.json)."""
    from rna_train.eval.robustness import predicted_robustness

    forget = json.loads((out / "eval-forget" / "eval.json").read_text())
    audit = json.loads((out / "audit" / "audit.json").read_text())
    trig, ctrl = audit["keywords"].values()
    row: dict[str, Any] = {
        "forget": float(forget["results"]["loglik"]["clean"]["overall"]["rate"]),
        "retain": float(trig["measured"]["clean_accuracy"]["rate"]),
        "retain_trigger": float(trig["measured"]["perturbed_accuracy"]["rate"]),
        "retain_control": float(ctrl["measured"]["perturbed_accuracy"]["rate"]),
    }
    row["drop_trigger"] = row["retain"] - row["retain_trigger"]
    row["drop_control"] = row["retain"] - row["retain_control"]
    for key, entry in (("trigger", trig), ("control", ctrl)):
        est = entry["estimators"]["offset"]
        row[f"unchanged_{key}"] = float(entry["measured"]["unchanged"]["rate"])
        row[f"eta_{key}"] = float(est.get("eta", math.nan))
        row[f"mean_norm_{key}"] = float(est.get("mean_norm", math.nan))
        at_nu = (entry.get("predicted") or {}).get("at_nu") or {}
        row[f"predicted_certified_{key}"] = at_nu.get("certified")
        row[f"predicted_first_order_{key}"] = at_nu.get("first_order")
        row[f"eta_last_{key}"] = float(entry["estimators"]["last"].get("eta", math.nan))
        row[f"predicted_first_order_last_{key}"] = None
        if at_nu.get("nu"):
            # The answer is read at the last token: the same first-order prediction with that
            # position's eta (the offset eta averages over every token after the keyword).
            margins = np.load(out / "audit" / entry["latents"])["margins"]
            row[f"predicted_first_order_last_{key}"] = predicted_robustness(
                margins, row[f"eta_last_{key}"], int(audit["dim"]), float(at_nu["nu"]))["first_order"]
    row["n_questions"] = int(audit["n_questions"])
    row["dim"] = audit.get("dim")
    row["rms"] = audit.get("rms")
    row["margin_median"] = audit["margins"]["median"]
    return row


def unlearn(base: BaseModel, variant: Variant, seed: int, out: Path, schedule: Schedule) -> Path:
    """Train one run with the real trainer (skipped when ``out/DONE`` exists); returns the model folder."""
    from rna_train.config import load_config
    from rna_train.trainer import DONE, train

    if (out / DONE).is_file():
        log.info("reusing finished run %s", out)
        return out / "model"
    out.mkdir(parents=True, exist_ok=True)
    recipe = out.parent / f"{variant.name}.yaml"
    recipe.write_text(yaml.safe_dump(run_config(base, variant, seed, out, schedule), sort_keys=False))
    cfg, options = load_config(recipe)
    train(cfg, options)
    return out / "model"


@dataclasses.dataclass
class Results:
    """Per-run numbers and per-variant aggregates over seeds."""

    runs: list[dict[str, Any]]
    seconds: float

    def by_variant(self) -> dict[str, list[dict[str, Any]]]:
        """Runs grouped by variant name (``base`` included), in first-seen order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.runs:
            out.setdefault(r["variant"], []).append(r)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per variant: mean and 95% t-interval over seeds of every numeric field."""
        table: dict[str, dict[str, Any]] = {}
        for name, rows in self.by_variant().items():
            entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows], "method": rows[0]["method"],
                                     "rna": rows[0]["rna"], "nu": rows[0]["nu"]}
            for key in rows[0]:
                values = [r.get(key) for r in rows]
                if key in ("seed", "nu") or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in values):
                    continue
                entry[key] = mean_ci([float(v) for v in values])
            table[name] = entry
        return table


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and Student-t interval over seeds (a zero-width interval for a single value)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return {"mean": mean, "lo": mean, "hi": mean, "n": int(arr.size)}
    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(arr.size)}


def run_grid(base: BaseModel, variants: Sequence[Variant], seeds: Sequence[int], out_dir: str | Path, *,
             schedule: Schedule = Schedule(),
             progress: Callable[[str], None] | None = None) -> Results:
    """Evaluate the base model and every (variant, seed) run; writes ``summary.json``."""
    import torch
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    layer = int(METHOD_OPTIONS[variants[0].method]["layer"]) if variants else 2
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    jobs = [(None, s) for s in seeds] + [(v, s) for v in variants for s in seeds]
    for variant, seed in tqdm(jobs, desc="miniature runs", disable=progress is not None):
        name = variant.name if variant else "base"
        if progress:
            progress(f"{name} seed {seed}")
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        run_dir = out_dir / name / f"seed-{seed}"
        model_dir = base.path if variant is None else unlearn(base, variant, seed, run_dir, schedule)
        lay = int(METHOD_OPTIONS[variant.method]["layer"]) if variant else layer
        numbers = evaluate_model(model_dir, miniature_probes(base), run_dir, seed, layer=lay, label=name,
                                 batch_size=schedule.eval_batch_size, retain_evals=schedule.retain_evals)
        runs.append({"variant": name, "method": variant.method if variant else "base",
                     "rna": variant.rna if variant else "off", "nu": variant.nu if variant else 0.0,
                     "seed": seed, "seconds": round(time.perf_counter() - t0, 1), **numbers})
    results = Results(runs, time.perf_counter() - start)
    (out_dir / "summary.json").write_text(json.dumps({"seconds": round(results.seconds, 1), "runs": runs,
                                                      "summary": results.summary()}, indent=2) + "\n")
    return results


def markdown_table(results: Results) -> str:
    """Accuracy table (mean [95% CI] over seeds) for reports and the quickstart output."""
    def cell(e: dict[str, float] | None) -> str:
        if not e:
            return "-"
        return f"{e['mean']:.3f}" if e["n"] < 2 else f"{e['mean']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"

    head = ("| variant | seeds | forget acc | retain acc | retain + trigger | retain + control | drop (trigger) "
            "| drop (control) | eta trigger | eta control |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for name, e in results.summary().items():
        lines.append(f"| {name} | {len(e['seeds'])} | {cell(e.get('forget'))} | {cell(e.get('retain'))} | "
                     f"{cell(e.get('retain_trigger'))} | {cell(e.get('retain_control'))} | "
                     f"{cell(e.get('drop_trigger'))} | {cell(e.get('drop_control'))} | "
                     f"{cell(e.get('eta_trigger'))} | {cell(e.get('eta_control'))} |")
    return "\n".join(lines)


def plot_drops(results: Results, path: str | Path) -> Path:
    """Bar chart: retain-accuracy drop with a trigger vs a control word per variant, 95% CI over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results.summary()
    names = list(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 3.6))
    for offset, key, label in ((-0.2, "drop_trigger", "forget trigger inserted"),
                               (0.2, "drop_control", "control word inserted")):
        means = [summary[n][key]["mean"] for n in names]
        err = np.array([[summary[n][key]["mean"] - summary[n][key]["lo"],
                         summary[n][key]["hi"] - summary[n][key]["mean"]] for n in names]).T
        ax.bar(x + offset, means, width=0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("retain accuracy drop")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(frameon=False)
    ax.set_title("Miniature world: retain-accuracy drop (mean, 95% CI over seeds)")
    return save_figure(fig, path)


def plot_predicted(results: Results, path: str | Path) -> Path | None:
    """Predicted (C6 certified, first order) vs measured P(prediction unchanged) under a trigger, per
    RNA variant (mean over seeds, 95% CI bars on the measurement); None when no run has RNA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {n: e for n, e in results.summary().items()
               if e["rna"] != "off" and e.get("predicted_first_order_trigger")}
    if not summary:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for marker, key, label in (("o", "predicted_first_order_trigger", "first order Phi(nu g / eta)"),
                               ("s", "predicted_certified_trigger", "certified F_chi2(R^2/eta^2)")):
        xs = [e[key]["mean"] for e in summary.values() if e.get(key)]
        ys = [e["unchanged_trigger"]["mean"] for e in summary.values() if e.get(key)]
        err = [[e["unchanged_trigger"]["mean"] - e["unchanged_trigger"]["lo"] for e in summary.values() if e.get(key)],
               [e["unchanged_trigger"]["hi"] - e["unchanged_trigger"]["mean"] for e in summary.values() if e.get(key)]]
        ax.errorbar(xs, ys, yerr=err, fmt=marker, capsize=3, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted P(unchanged)")
    ax.set_ylabel("measured P(unchanged), trigger inserted")
    ax.set_title(f"{len(summary)} RNA variants (mean over seeds)", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return save_figure(fig, path)
