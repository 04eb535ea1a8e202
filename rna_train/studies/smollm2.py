"""The real-LLM experiment: SmolLM2-135M-Instruct unlearned on Wikipedia biology text, measured on MMLU.

Why: the miniature world shows the mechanism on a model whose ground truth we know; this runs the
same pipeline (real trainer, ``rna eval``, ``rna audit``) on a real pretrained LLM, with the assets
of :mod:`rna_train.studies.assets`: forget = Wikipedia biology articles (text) and MMLU biology/medicine
questions (probe); retain = the other articles and the other MMLU subjects; trigger keywords =
the packaged ``bio`` list, control = the packaged ``control`` list. CPU budgets force short runs
(tens of steps, 64-token documents, sampled probes); :class:`RealSchedule` holds every size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from rna_train.studies.assets import require
from rna_train.studies.miniature.experiment import (
    Probes,
    Results,
    evaluate_model,
    markdown_table,
    plot_drops,
    plot_predicted,
)

log = logging.getLogger(__name__)

#: Decoder layer of the RM losses and of RNA (SmolLM2 has 30 layers; the paper uses 7 of 32).
LAYER = 6


@dataclasses.dataclass(frozen=True)
class RealSchedule:
    """Sizes of the SmolLM2 runs (CPU: one full train step takes seconds)."""

    steps: int = 24
    batch_size: int = 4
    max_length: int = 64
    sample: int = 100
    eval_batch_size: int = 16
    rna_nu: float = 0.1
    max_chars: int = 300


def short_probe(source: Path, target: Path, max_chars: int) -> Path:
    """The questions of ``source`` whose question plus choices have at most ``max_chars`` characters.

    Why: scoring cost grows with context length and MMLU has questions of several thousand
    characters; on a CPU we keep the shorter half (the subject mix shifts towards short-question
    subjects, which results.md states).
    """
    from rna_train.eval.probes import load_probe, write_probe

    if not target.is_file():
        keep = [q for q in load_probe(source) if len(q.question) + sum(len(c) for c in q.choices) <= max_chars]
        write_probe(keep, target)
    return target


#: Method options per variant family; RNA noise is a fraction of the layer's activation RMS.
METHODS: dict[str, dict[str, Any]] = {
    "rmu": {"method": {"name": "rmu", "layer": LAYER, "alpha": 100.0, "steering_coef": 300.0}, "lr": 1e-3},
    "npo": {"method": {"name": "npo", "layer": LAYER, "alpha": 5.0, "beta": 0.1, "retain_loss": "kl"}, "lr": 1e-4},
    # Added after rmu's forget loss did not move in 24 steps: a reachable target, 10x the lr, 40 steps.
    "rmu_strong": {"method": {"name": "rmu", "layer": LAYER, "alpha": 100.0, "steering_coef": 100.0}, "lr": 1e-2,
                   "steps": 40},
}


def variants(schedule: RealSchedule) -> list[tuple[str, str, str]]:
    """``(name, method, rna mode)`` of every configuration: each method without and with target RNA."""
    out = []
    for method in METHODS:
        out.append((method, method, "off"))
        out.append((f"{method}-target-{schedule.rna_nu:g}rms", method, "target"))
    return out


def run_config(model: Path, wiki: Path, method: str, rna: str, seed: int, out: Path,
               schedule: RealSchedule) -> dict[str, Any]:
    """The trainer config of one SmolLM2 run (also written to ``experiments/smollm2/*.yaml``)."""
    spec = METHODS[method]
    return {
        "output_dir": str(out), "seed": seed,
        "model": {"name_or_path": str(model), "dtype": "fp32"},
        "data": {"forget": [{"name": "bio", "path": str(wiki / "forget.jsonl")}],
                 "retain": {"name": "wikipedia", "path": str(wiki / "retain.jsonl")},
                 "max_length": schedule.max_length, "min_length": 16},
        "method": dict(spec["method"]),
        "rna": {"mode": rna, "noise": {"nu": schedule.rna_nu, "relative_to": "rms"} if rna != "off" else 0.0},
        "train": {"steps": spec.get("steps", schedule.steps), "batch_size": schedule.batch_size, "lr": spec["lr"],
                  "checkpoint_every": 0, "log_every": max(1, schedule.steps // 6), "progress": True},
    }


def variant_names(schedule: RealSchedule) -> list[str]:
    """``base`` and every configuration's name."""
    return ["base", *(name for name, _m, _r in variants(schedule))]


def run_variant(out_dir: str | Path, name: str, seed: int, *, schedule: RealSchedule = RealSchedule(),
                cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Unlearn (unless ``base`` or already done), evaluate and audit one configuration and seed.

    Writes ``out_dir/NAME/seed-S/numbers.json`` and returns the numbers.
    """
    from rna_theory.errors import RNAError
    from rna_train.config import load_config
    from rna_train.trainer import DONE, train

    table = {n: (m, r) for n, m, r in variants(schedule)} | {"base": ("base", "off")}
    if name not in table:
        raise RNAError(f"unknown configuration {name!r}", where="variant", fix=f"use one of {', '.join(table)}")
    method, rna = table[name]
    model = require("smollm2", cache_dir)
    mmlu = require("mmlu", cache_dir)
    wiki = require("wikipedia", cache_dir)
    probe_dir = Path(out_dir) / "probes"
    probes = Probes(short_probe(mmlu / "forget.jsonl", probe_dir / f"forget-{schedule.max_chars}.jsonl",
                                schedule.max_chars),
                    short_probe(mmlu / "retain.jsonl", probe_dir / f"retain-{schedule.max_chars}.jsonl",
                                schedule.max_chars),
                    "bio", "control", sample=schedule.sample)
    run_dir = Path(out_dir) / name / f"seed-{seed}"
    t0 = time.perf_counter()
    model_dir = model
    if method != "base":
        model_dir = run_dir / "model"
        if not (run_dir / DONE).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            recipe = run_dir.parent / f"{name}.yaml"
            recipe.write_text(yaml.safe_dump(run_config(model, wiki, method, rna, seed, run_dir, schedule),
                                             sort_keys=False))
            cfg, options = load_config(recipe)
            train(cfg, options)
    train_s = time.perf_counter() - t0
    numbers = evaluate_model(model_dir, probes, run_dir, seed, layer=LAYER, label=name,
                             batch_size=schedule.eval_batch_size, retain_evals=False)
    row = {"variant": name, "method": method, "rna": rna, "nu": schedule.rna_nu if rna != "off" else 0.0,
           "seed": seed, "train_seconds": round(train_s, 1), "seconds": round(time.perf_counter() - t0, 1),
           **numbers}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "numbers.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def summarize(out_dir: str | Path, *, title: str = "SmolLM2-135M: unlearning +/- RNA") -> tuple[str, Path]:
    """Table, figure, summary.json and report over every ``numbers.json`` under ``out_dir``."""
    from rna_train.eval.report import write_report

    out_dir = Path(out_dir)
    rows = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/seed-*/numbers.json"))]
    order = {n: i for i, n in enumerate(variant_names(RealSchedule()))}
    rows.sort(key=lambda r: (order.get(r["variant"], len(order)), r["seed"]))
    results = Results(rows, sum(r["seconds"] for r in rows))
    (out_dir / "summary.json").write_text(json.dumps({"seconds": round(results.seconds, 1), "runs": rows,
                                                      "summary": results.summary()}, indent=2) + "\n")
    table = markdown_table(results)
    (out_dir / "summary.md").write_text(table + "\n")
    plot_drops(results, out_dir / "drops.png")
    plot_predicted(results, out_dir / "predicted.png")
    first = {r["variant"]: r["seed"] for r in reversed(rows)}
    run_dirs = [d for name, seed in first.items()
                for d in [*sorted((out_dir / name / f"seed-{seed}").glob("eval-*")),
                          out_dir / name / f"seed-{seed}" / "audit"]]
    report = out_dir / "report"
    write_report(run_dirs, report, title=title)
    return table, report

