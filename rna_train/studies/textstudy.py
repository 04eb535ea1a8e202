"""The keyword-fragility study on a real LLM (SmolLM2-135M): unlearn Wikipedia biology, measure on text.

Why: the paper's backdoor (one forget word inside an ordinary input derails the unlearned model)
is measured here as it shows on a small model: the NLL of the next tokens of held-out
non-biology text after one inserted word (:mod:`rna_train.eval.fragility`), for mined forget
keywords, on-topic words absent from the forget corpus, and matched control words, paired against
the base model. The same module serves ``rna quickstart`` and ``experiments/smollm2/study.py``.

Data (:func:`prepare_data`, deterministic): the Wikipedia asset's chunks are split per article
position, every ``heldout_every``-th chunk held out: forget-train / forget-heldout (forgetting is
measured on held-out biology text) and retain-train / retain-heldout (fragility is measured on
held-out non-biology text). Keyword groups are mined once from the two training corpora and fixed
before any run (``keywords/``).

A run trains with the real trainer, keeping a snapshot of the trained tensors at every evaluation step, so one training
run gives a whole curve of unlearning strength; each snapshot's trainable tensors are swapped
into one loaded base model for evaluation (:meth:`Evaluator.run`). A variant's trainings are a
sweep (:func:`rna_train.sweep.run_sweep`) of its trainer config (``<out>/<variant>/config.yaml``)
over its seeds (:func:`train_variant`): runs in ``<out>/<variant>/seed-<N>/``, the sweep's record
and summary of the training losses over seeds (``sweep.json``, ``summary.{json,md,png}``) beside
them. Everything is resumable: a finished training run (``DONE``) or evaluation
(``eval-step-N.json``) is never redone, a started training resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rna_theory.errors import RNAError
from rna_train.eval.fragility import Cells, TextSpec, head_margins, save_latent_groups

log = logging.getLogger(__name__)

RUN_FOLDER = "seed-{seed}"
"""A run's folder inside ``<out>/<variant>/`` (a :func:`rna_train.sweep.point_folder` template)."""


@dataclasses.dataclass(frozen=True)
class StudyData:
    """Paths of the four text splits and of the fixed keyword groups."""

    root: Path

    def split(self, name: str) -> Path:
        """``forget_train``, ``forget_heldout``, ``retain_train`` or ``retain_heldout`` (JSONL)."""
        return self.root / f"{name}.jsonl"

    def groups(self) -> dict[str, list[str]]:
        """The fixed keyword groups (forget, on_topic, control)."""
        from rna_train.eval.mining import GROUPS, load_groups

        return load_groups([f"{g}={self.root / 'keywords' / (g + '.txt')}" for g in GROUPS])


def prepare_data(root: str | Path, tokenizer: Any, *, heldout_every: int = 5, n_keywords: int = 30,
                 cache_dir: str | Path | None = None) -> StudyData:
    """Split the Wikipedia asset and mine the keyword groups (once; later calls reuse the files)."""
    from rna_train.eval.mining import mine_keywords
    from rna_train.studies.assets import require

    data = StudyData(Path(root))
    if (data.root / "keywords" / "keywords.json").is_file():
        return data
    wiki = require("wikipedia", cache_dir)
    texts: dict[str, list[str]] = {}
    for side in ("forget", "retain"):
        rows = [line for line in (wiki / f"{side}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        for part, keep in (("train", lambda i: i % heldout_every != 0), ("heldout", lambda i: i % heldout_every == 0)):
            chosen = [r for i, r in enumerate(rows) if keep(i)]
            data.root.mkdir(parents=True, exist_ok=True)
            data.split(f"{side}_{part}").write_text("".join(r + "\n" for r in chosen), encoding="utf-8")
            texts[f"{side}_{part}"] = [json.loads(r)["text"] for r in chosen]
    # raw-count matching: the study's lists were fixed with it before any run (docs/results.md)
    groups = mine_keywords(texts["forget_train"], texts["retain_train"], n=n_keywords, tokenizer=tokenizer,
                           match_frequency="count")
    groups.write(data.root / "keywords")
    return data


def corpus_nll(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
               batch_size: int = 16) -> dict[str, float]:
    """Mean token NLL and top-1 accuracy of the first ``max_length`` tokens of each text."""
    from rna_train.attacks.textnll import text_token_scores

    scores = text_token_scores(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    logp = np.concatenate([s.logprobs for s in scores])
    top1 = np.concatenate([s.top1 for s in scores])
    return {"nll": float(-logp.mean()), "top1": float(top1.mean()), "n_texts": len(scores), "n_tokens": int(logp.size)}


def evaluate_model(model: Any, tokenizer: Any, data: StudyData, spec: TextSpec, out: Path, *,
                   baseline: Cells | None = None, n_nll_texts: int = 32, label: str = "") -> dict[str, Any]:
    """Forget/retain NLL on held-out text and keyword fragility; writes ``out`` (json + cells)."""
    from rna_train.data import read_texts
    from rna_train.eval.fragility import build_items, check_same_cells, score_cells, summarize

    t0 = time.perf_counter()
    numbers: dict[str, Any] = {"label": label}
    for side in ("forget", "retain"):
        texts = read_texts(data.split(f"{side}_heldout"))[:n_nll_texts]
        numbers[f"{side}_heldout"] = corpus_nll(model, tokenizer, texts)
    items = build_items(read_texts(data.split("retain_heldout")), tokenizer, spec)
    cells, latents = score_cells(model, tokenizer, items, data.groups(), spec)
    if baseline is not None:
        check_same_cells(cells, baseline, str(out))
    summary = summarize(cells, spec, baseline)
    numbers.update(fragility=summary, seconds=round(time.perf_counter() - t0, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    cells.save(out.with_suffix(".cells.npz"))
    save_latent_groups(out.with_suffix(".latents"), latents, spec, head_margins(cells, spec))
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    return numbers


def load_trainable(model: Any, checkpoint: Path, originals: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy the trainable tensors of a ``.safetensors`` file (a snapshot, or a run's
    ``trainable.safetensors``) into ``model``; returns the values they replaced (the ones in
    ``originals`` when given), for :func:`restore`."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(checkpoint))
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RNAError(f"checkpoint holds parameters the model lacks: {missing[:3]}", where=str(checkpoint),
                       fix="evaluate the checkpoint on the base model it was trained from")
    saved = {n: params[n].detach().clone() for n in state} if originals is None else originals
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    return saved


def restore(model: Any, originals: dict[str, Any]) -> None:
    """Put back the values :func:`load_trainable` replaced."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in originals.items():
            params[name].copy_(value)


def train_run(config: dict[str, Any], run_dir: Path) -> bool:
    """Train (or resume) one run from a trainer config dict; False when it had already finished."""
    from rna_train.config import load_config
    from rna_train.trainer import DONE, train

    if (run_dir / DONE).is_file():
        return False
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    recipe = run_dir.parent / f"{run_dir.name}.yaml"
    recipe.write_text(yaml.safe_dump({**config, "output_dir": str(run_dir)}, sort_keys=False))
    cfg, options = load_config(recipe)
    train(cfg, options, resume=resume)
    return True


@dataclasses.dataclass
class MethodSpec:
    """One unlearning method of a study: trainer ``method`` options, learning rate, evaluation steps,
    and optionally the trainable parameter patterns (``model.trainable.patterns``; default: the
    architecture's MLP output projection)."""

    method: dict[str, Any] = dataclasses.field(default_factory=dict)
    lr: float = 1e-3
    eval_steps: list[int] = dataclasses.field(default_factory=lambda: [150])
    batch_size: int | None = None
    max_length: int | None = None
    trainable: list[str] | None = None


@dataclasses.dataclass
class VariantSpec:
    """A method with an RNA setting (mode, nu as a fraction of the layer's RMS, or of its robust scale
    with ``scale: robust``, layer) and its seeds."""

    method: str = ""
    rna: str = "off"
    nu: float = 0.0
    scale: str = "rms"
    rna_layer: int | None = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])


@dataclasses.dataclass
class StudyPlan:
    """A study: where it writes, the model, evaluation and training settings, methods and variants."""

    out: str = "runs/study"
    model: str = "smollm2"
    data: str | None = None
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    methods: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: dict[str, Any] = dataclasses.field(default_factory=dict)

    def spec(self) -> TextSpec:
        """The evaluation settings."""
        return TextSpec(**self.eval)

    def method(self, name: str) -> MethodSpec:
        """A validated method entry."""
        from rna_train.config import from_dict

        if name not in self.methods:
            raise RNAError(f"unknown method {name!r}", where="variants",
                           fix=f"define it under methods: ({', '.join(self.methods)})")
        return from_dict(MethodSpec, self.methods[name], f"methods.{name}")

    def variant(self, name: str) -> VariantSpec:
        """A validated variant entry."""
        from rna_train.config import from_dict

        if name not in self.variants:
            raise RNAError(f"unknown variant {name!r}", where="--only", fix=f"use one of {', '.join(self.variants)}")
        spec = from_dict(VariantSpec, self.variants[name], f"variants.{name}")
        if spec.rna not in ("off", "target", "input"):
            raise RNAError(f"rna must be off, target or input, got {spec.rna!r}", where=f"variants.{name}.rna")
        if spec.scale not in ("rms", "robust"):
            raise RNAError(f"scale must be rms or robust, got {spec.scale!r}", where=f"variants.{name}.scale")
        self.method(spec.method)
        return spec


def load_plan(path: str | Path, overrides: Sequence[str] = ()) -> StudyPlan:
    """Parse and validate a study plan YAML (``key=value`` overrides as for run configs)."""
    from rna_train.config import from_dict, load_raw

    plan = from_dict(StudyPlan, load_raw(path, overrides))
    plan.spec()
    for name in plan.variants:
        plan.variant(name)
    return plan


def model_path(plan: StudyPlan, cache_dir: str | Path | None = None) -> Path:
    """The model folder: an asset name (``smollm2``) or a folder."""
    from rna_train.studies.assets import FETCHERS, require

    return require(plan.model, cache_dir) if plan.model in FETCHERS else Path(plan.model)


def run_config(plan: StudyPlan, name: str, seed: int, model: Path, data: StudyData) -> dict[str, Any]:
    """The trainer config of one run of variant ``name``, checkpointing at each evaluation step."""
    return {"seed": seed, **variant_config(plan, name, model, data)}


def variant_config(plan: StudyPlan, name: str, model: Path, data: StudyData) -> dict[str, Any]:
    """The trainer config of variant ``name`` without its seed (:func:`run_config`)."""
    variant = plan.variant(name)
    method = plan.method(variant.method)
    steps = max(method.eval_steps)
    rna: dict[str, Any] = {"mode": variant.rna, "noise": 0.0}
    if variant.rna != "off":
        rna["noise"] = {"nu": variant.nu, "relative_to": variant.scale}
        if variant.rna_layer is not None:
            rna["layer"] = variant.rna_layer
    train = {"batch_size": 4, "max_length": 64, "min_length": 16, **plan.train}
    return {
        "model": {"name_or_path": str(model), "dtype": "fp32", "trainable": {"patterns": method.trainable}},
        "data": {"forget": [{"name": "bio", "path": str(data.split("forget_train"))}],
                 "retain": {"name": "wikipedia", "path": str(data.split("retain_train"))},
                 "max_length": method.max_length or train["max_length"], "min_length": train["min_length"]},
        "method": dict(method.method), "rna": rna,
        "train": {"steps": steps, "batch_size": method.batch_size or train["batch_size"], "lr": method.lr,
                  "snapshot_steps": sorted(method.eval_steps), "checkpoint_every": max(1, steps // 4),
                  "keep_checkpoints": 1, "log_every": max(1, steps // 8),
                  "save_model": False, "progress": False},
    }


def _train_timed(cfg: Any, options: Any, resume: bool = False) -> None:
    """Train one run (:func:`rna_train.trainer.train`) and write its wall time to ``train_seconds.json``."""
    from rna_train.trainer import train

    t0 = time.perf_counter()
    train(cfg, options, resume=resume)
    seconds = round(time.perf_counter() - t0, 1)
    (Path(cfg.output_dir) / "train_seconds.json").write_text(json.dumps({"seconds": seconds}))


def train_variant(plan: StudyPlan, name: str, model: Path, data: StudyData, seeds: Sequence[int]) -> dict[str, Any]:
    """Train (or resume) variant ``name``'s runs with ``seeds`` as points of the variant's sweep.

    The variant's trainer config (:func:`variant_config`) is written to ``<out>/<name>/config.yaml``
    and swept over the variant's seeds (:func:`rna_train.sweep.run_sweep`, ``run_folder``
    :data:`RUN_FOLDER`); only ``seeds`` are trained here (the others are left to another process or
    a later call): finished runs are skipped, started ones resumed. The sweep's summary, the mean of
    each run's last 10 steps of the loss terms with a Student-t interval over the finished seeds, is
    written to ``<out>/<name>/summary.{json,md,png}`` and returned. A failed training raises.
    """
    from rna_train.config import load_config
    from rna_train.methods import get_method
    from rna_train.sweep import Grid, run_sweep, write_atomic

    folder = Path(plan.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"  # other processes may read it
    write_atomic(config, yaml.safe_dump(variant_config(plan, name, model, data), sort_keys=False))
    cfg, options = load_config(config)
    metrics = ["loss", "forget", *(["retain"] if get_method(cfg.method["name"]).uses_retain(options) else [])]
    grid = Grid({"seed": [str(s) for s in dict.fromkeys([*plan.variant(name).seeds, *seeds])]}, [])
    wanted = {str(s) for s in seeds}
    summary = run_sweep(config, grid, folder, metrics=metrics, last=10, run_folder=RUN_FOLDER,
                        only=lambda point: point["seed"] in wanted, train_fn=_train_timed)
    if summary["failures"]:
        raise RNAError(f"training failed: {summary['failures']}", where=str(folder),
                       fix="see the error logged above; a rerun resumes the variant")
    return summary


def jobs(plan: StudyPlan, only: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """``(variant, seed)`` pairs to run, in plan order (``only``/``seeds`` filter)."""
    names = list(only) or list(plan.variants)
    return [(n, s) for n in names for s in plan.variant(n).seeds if seeds is None or s in seeds]


def current(path: Path, paired: bool = False) -> bool:
    """True if the evaluation at ``path`` exists and records everything this version measures
    (evaluations written before arg-max predictions were recorded, or, with ``paired``, without the
    excess over the base model, are redone)."""
    if not path.is_file():
        return False
    frag = json.loads(path.read_text())["fragility"]
    return "unchanged" in frag and (not paired or "excess" in frag)


class Evaluator:
    """The base model loaded once; evaluates it and any run's checkpoints (resumably)."""

    def __init__(self, plan: StudyPlan, cache_dir: str | Path | None = None) -> None:
        from rna_train.eval.loading import load_for_eval

        self.plan = plan
        self.out = Path(plan.out)
        self.model_dir = model_path(plan, cache_dir)
        self.model, self.tokenizer = load_for_eval(str(self.model_dir))
        self.data = prepare_data(plan.data or self.out / "data", self.tokenizer, cache_dir=cache_dir)
        self.spec = plan.spec()

    def base(self) -> dict[str, Any]:
        """The base model's numbers (``out/base/eval.json``)."""
        path = self.out / "base" / "eval.json"
        if current(path):
            return json.loads(path.read_text())
        log.info("evaluating the base model")
        return evaluate_model(self.model, self.tokenizer, self.data, self.spec, path, label="base")

    def run(self, name: str, seed: int) -> list[dict[str, Any]]:
        """Train variant ``name`` with ``seed`` (unless done; :func:`train_variant`) and evaluate its snapshot at each
        of eval_steps."""
        from rna_train.checkpoint import snapshot_path

        self.base()  # the paired excess needs the base model's cells
        baseline = Cells.load(self.out / "base" / "eval.cells.npz")
        run_dir = self.out / name / RUN_FOLDER.format(seed=seed)
        train_variant(self.plan, name, self.model_dir, self.data, [seed])
        rows = []
        for step in self.plan.method(self.plan.variant(name).method).eval_steps:
            path = run_dir / f"eval-step-{step}.json"
            if current(path, paired=True):
                rows.append(json.loads(path.read_text()))
                continue
            log.info("%s seed %d: evaluating step %d", name, seed, step)
            originals = load_trainable(self.model, snapshot_path(run_dir / "snapshots", step))
            try:
                numbers = evaluate_model(self.model, self.tokenizer, self.data, self.spec, path, baseline=baseline,
                                         label=f"{name} seed {seed} step {step}")
            finally:
                restore(self.model, originals)
            rows.append(numbers)
        return rows
