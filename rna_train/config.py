"""Run configuration: YAML files and ``key=value`` overrides -> validated nested dataclasses.

Every problem is an :class:`RNAError` naming the dotted key (``train.lr``,
``data.forget.0.text_field``): unknown keys (with a did-you-mean), wrong types, out-of-range
values, raised by :func:`load_config` before any model or data is loaded. The generic checker lives
in :mod:`rna_train.schema`; the ``method`` section is validated by the chosen method's own options
dataclass from :mod:`rna_train.methods`; ``rna.noise`` becomes a ``NoiseSchedule`` here.
"""

# ruff: noqa: RUF009  (field() returns a dataclasses.Field with metadata, like dataclasses.field)
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rna_theory.errors import RNAError
from rna_theory.noise import NoiseSchedule
from rna_train.schema import (
    describe,
    field,
    from_dict,
    load_raw,
    parse_override,
    set_dotted,
    shorthands,
    to_dict,
    yaml_load,
)
from rna_train.tracking import TRACKERS

__all__ = ["RunConfig", "describe", "dump_yaml", "field", "from_dict", "load_config", "load_raw", "parse_noise",
           "parse_override", "set_dotted", "shorthands", "to_dict", "yaml_load"]


@dataclasses.dataclass
class TrainableConfig:
    """Which parameters are updated (everything else is frozen)."""

    layers: list[int] | None = field(None, doc="decoder layers to update (default: method layer l-2..l)")
    patterns: list[str] | None = field(None, doc="parameter-name globs relative to a layer "
                                       "(default: the architecture's MLP output projection)")


@dataclasses.dataclass
class LoraConfig:
    """Low-rank adapters (peft) on the selected matrices instead of updating them in full."""

    rank: int = field(0, min=0, doc="0: train the selected matrices in full; r > 0: rank-r LoRA adapters on them")
    alpha: float | None = field(None, gt=0, doc="adapter scale numerator: delta W = alpha / rank x B A "
                                "(default 2 x rank)")
    dropout: float = field(0.0, min=0, max=1, doc="dropout on the adapters' input")
    save: str = field("merged", choices=("merged", "adapter"),
                      doc="merged: model/ holds the merged weights; adapter: adapter/ holds a peft adapter "
                          "of model.name_or_path (no model/)")


@dataclasses.dataclass
class ModelConfig:
    """The model to unlearn."""

    name_or_path: str | None = field(None, doc="Hub id or local folder")
    from_config: dict[str, Any] | None = field(None, doc="build a randomly initialised model from "
                                               "config keys (model_type, hidden_size, ...)")
    tokenizer: str | None = field(None, doc="tokenizer id or folder (default: name_or_path)")
    gguf_file: str | None = field(None, doc="GGUF weights file inside name_or_path")
    dtype: str = field("fp32", choices=("fp32", "bf16", "fp16", "fp64"))
    trust_remote_code: bool = field(False, doc="run code shipped with the checkpoint")
    revision: str | None = None
    attn_implementation: str | None = field(None, doc="eager | sdpa | flash_attention_2")
    trainable: TrainableConfig = field(TrainableConfig)
    lora: LoraConfig = field(LoraConfig)


@dataclasses.dataclass
class CorpusConfig:
    """One corpus: files, the field holding the text, and an optional cap on documents."""

    name: str = "retain"
    path: list[str] = field([], doc="file(s), save_to_disk folder(s), folders of data files or Hub dataset ids")
    text_field: str = "text"
    format: str = field("auto", choices=("auto", "jsonl", "json", "parquet", "text", "disk", "csv", "hub"),
                        doc="auto: by suffix; a folder without save_to_disk files or an owner/name id is hub "
                            "(datasets.load_dataset)")
    split: str | None = field(None, doc="split of a save_to_disk DatasetDict or a load_dataset source (default train)")
    subset: str | None = field(None, doc="configuration name of a load_dataset source (e.g. bio-forget-corpus)")
    streaming: bool = field(False, doc="load_dataset sources: stream the first `limit` documents instead of "
                            "downloading the corpus")
    limit: int | None = field(None, min=1)


@dataclasses.dataclass
class TopicConfig(CorpusConfig):
    """A forget topic: its corpus plus per-topic coefficients."""

    name: str = "forget"
    steering_coef: float | None = field(None, min=0, doc="RM steering coefficient c (default: method's)")
    weight: float = field(1.0, min=0, doc="weight of this topic's forget loss")
    alpha: float | None = field(None, min=0, doc="retain weight while training on this topic")
    max_length: int | None = field(None, min=2, doc="this topic's tokens per document (default: data.max_length; "
                                   "the reference code cuts cyber documents at 768)")


@dataclasses.dataclass
class DataConfig:
    """Forget topics (visited in turn, one per step) and the retain corpus."""

    forget: list[TopicConfig] = field([])
    retain: CorpusConfig = field(CorpusConfig)
    max_length: int = field(512, min=2, doc="tokens per document after truncation")
    min_length: int = field(2, min=2, doc="documents with fewer tokens are dropped")
    truncation_side: str = field("right", choices=("right", "left"))
    shuffle: bool = field(True, doc="visit documents in a seeded random order (false: file order)")
    retain_order: str = field("per_step", choices=("per_step", "per_topic_cycle"),
                              doc="per_step: a new retain batch every step; per_topic_cycle: one retain batch "
                                  "per cycle over the forget topics (the reference code)")


@dataclasses.dataclass
class NoiseAutoConfig:
    """Inputs of ``nu: auto``."""

    latents: str | None = field(None, doc="npz of clean/perturbed latents written by `rna audit` at the noise layer")
    target: float = field(0.95, gt=0, max=1, doc="robustness probability to reach")
    criterion: str = field("first-order", choices=("first-order", "certified"),
                           doc="first-order (typical case) fits training; the certified bound is a worst case "
                               "over directions that asks for nu tens of times the activation scale in high "
                               "dimension (56x the RMS on the quickstart model), which undoes the unlearning")
    max_relative: float = field(1.0, gt=0, doc="refuse a tuned nu above this multiple of the layer's activation "
                                "RMS (the latents' rms)")
    chosen: dict[str, Any] | None = field(None, doc="written at load when noise is auto: the tuned nu, the RMS, "
                                          "the latents' dimension and the tuner's note (a record, not an input)")


@dataclasses.dataclass
class RNAConfig:
    """Random Noise Augmentation in the retain step."""

    mode: str = field("off", choices=("off", "target", "input"))
    layer: int | None = field(None, min=0, doc="decoder layer whose output is perturbed "
                              "(default: the method's layer)")
    noise: NoiseSchedule = field(NoiseSchedule(0.0), parse=lambda value, key: value, shorthand="nu",
                                 doc="nu (std), a NoiseSchedule mapping, or auto; always a NoiseSchedule "
                                     "once loaded (auto is tuned at load from rna.auto)")
    auto: NoiseAutoConfig = field(NoiseAutoConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.noise, NoiseSchedule):
            self.noise = parse_noise(self.noise, self.auto, active=self.mode != "off")


@dataclasses.dataclass
class EvalDuringTraining:
    """Registered metrics (rna_train/eval/units) computed every ``every`` steps and at the end."""

    every: int = field(0, min=0, doc="steps between evaluations (0: none)")
    metrics: list[str] = field(["forget_text", "retain_text"], doc="registered metric names")
    forget: str | None = field(None, doc="held-out forget texts (any format the data module reads)")
    retain: str | None = field(None, doc="held-out retain texts")
    keywords: list[str] = field([], doc="keyword groups NAME=LIST (a packaged list or a file) for keyword_effect")
    probe: str | None = field(None, doc="multiple-choice probe file (JSONL) for probe_accuracy")
    max_texts: int = field(32, min=1, doc="texts (chunks, questions) scored per corpus")
    max_length: int = field(64, min=2, doc="tokens scored per text")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    steps: int = field(150, min=1, doc="optimizer steps")
    batch_size: int = field(4, min=1, doc="global forget (and retain) batch per optimizer step, "
                            "over all processes and accumulation micro-steps")
    grad_accum: int = field(1, min=1)
    lr: float = field(5e-5, gt=0)
    lr_schedule: str = field("constant", choices=("constant", "linear", "cosine", "cosine_with_restarts",
                                                  "polynomial", "inverse_sqrt"),
                             doc="learning-rate schedule over train.steps (transformers.get_scheduler)")
    warmup_steps: int = field(0, min=0, doc="linear warm-up from 0 to train.lr over this many steps")
    tracker: str = field("auto", choices=TRACKERS,
                         doc="experiment tracker through accelerate (auto: TensorBoard when installed, else none)")
    gradient_checkpointing: bool = field(False, doc="recompute decoder layers in the backward pass instead of "
                                         "keeping their activations (less memory, about one more forward)")
    weight_decay: float = field(0.0, min=0)
    betas: list[float] = field([0.9, 0.999])
    eps: float = field(1e-8, gt=0)
    max_grad_norm: float | None = field(None, gt=0)
    mixed_precision: str = field("no", choices=("no", "bf16", "fp16"))
    checkpoint_every: int = field(50, min=0, doc="steps between checkpoints (0: none)")
    keep_checkpoints: int = field(2, min=1)
    snapshot_steps: list[int] = field([], min=1, doc="steps after which the trainable tensors are saved to "
                                      "snapshots/step-NNNNNNN.safetensors and kept (one run gives a curve of "
                                      "unlearning strength; checkpoints are removed when a run finishes)")
    log_every: int = field(10, min=1, doc="steps between log lines (metrics.jsonl gets every step)")
    progress: bool = field(True, doc="tqdm progress bar")
    save_model: bool = field(True, doc="save_pretrained the final model")
    dropout: bool = field(False, doc="train with the model's dropout active (default: eval mode, like "
                          "the reference code, so the retain loss is exactly 0 at the original weights)")
    nonfinite: str = field("stop", choices=("stop", "skip"),
                           doc="on a NaN/Inf loss term or gradient: stop the run (keeping the last good "
                               "checkpoint, saving no model), or skip the step (no update)")
    max_skipped_steps: int = field(10, min=0, doc="with nonfinite: skip, stop once more steps than this were skipped")
    reference_cache: bool = field(True, doc="before step 1, compute the frozen reference's outputs on every "
                                  "sequence the run will visit and reuse them at each step (forget NLLs, "
                                  "retain distributions, shared lower layers); see docs/benchmarks.md")
    reference_cache_gib: float = field(8.0, min=0, doc="host memory for cached layer outputs; sequences "
                                       "beyond it are recomputed every step")
    eval: EvalDuringTraining = field(EvalDuringTraining)
    head_chunk_mib: float = field(8.0, min=0, doc="next-token losses apply the output head to chunks of "
                                  "positions whose float32 logits fit in this many MiB (at most 4 chunks), taking "
                                  "each chunk's gradient at once (no batch x seq x vocab tensor is kept); "
                                  "0: full logits")


@dataclasses.dataclass
class RunConfig:
    """A whole unlearning run."""

    output_dir: str = field("runs/unlearn")
    seed: int = field(0, min=0)
    model: ModelConfig = field(ModelConfig)
    data: DataConfig = field(DataConfig)
    method: dict[str, Any] = field({"name": "rmu"}, doc="name plus the method's options")
    rna: RNAConfig = field(RNAConfig)
    train: TrainConfig = field(TrainConfig)


def parse_noise(noise: Any, auto: NoiseAutoConfig, *, active: bool = True) -> NoiseSchedule:
    """The :class:`NoiseSchedule` of an ``rna.noise`` value: a number, a mapping or ``auto``.

    ``auto`` (or a mapping with ``nu: auto``) asks :func:`rna_theory.tuner.tune_from_file` for the
    smallest nu meeting ``auto.target`` given the latents file ``auto.latents``; when RNA is off
    (``active`` false) nothing is tuned and nu is 0. Errors name ``rna.noise...``.
    """
    is_auto = noise == "auto" or (isinstance(noise, Mapping) and noise.get("nu") == "auto")
    if is_auto:
        if isinstance(noise, Mapping) and noise.get("relative_to") == "robust":
            raise RNAError("nu: auto is tuned against the activation RMS, not the robust scale",
                           where="rna.noise.relative_to", fix="use relative_to: rms (or absolute) with nu: auto")
        relative = isinstance(noise, Mapping) and noise.get("relative_to") == "rms"
        nu = _auto_nu(auto, relative=relative) if active else 0.0
        noise = {**noise, "nu": nu} if isinstance(noise, Mapping) else nu
    try:
        return NoiseSchedule.from_dict(noise)
    except RNAError as exc:
        where = exc.where or "noise"
        where = where if where.startswith("noise") else f"noise.{where}"
        raise RNAError(exc.what, where=f"rna.{where}", fix=exc.fix) from None
    except TypeError as exc:  # a mapping value of the wrong type (e.g. nu: [1])
        raise RNAError(f"invalid noise value {noise!r} ({exc})", where="rna.noise",
                       fix="write a number, auto, or {nu: 0.03, kind: constant}") from None


def _auto_nu(auto: NoiseAutoConfig, *, relative: bool) -> float:
    import logging

    if not auto.latents:
        raise RNAError("nu: auto needs a latents file", where="rna.auto.latents",
                       fix="set rna.auto.latents to the .npz written by `rna tune`/the theory tools")
    if not Path(auto.latents).is_file():
        raise RNAError(f"latents file {auto.latents!r} not found", where="rna.auto.latents",
                       fix="run the latent collection first or fix the path")
    from rna_theory.tuner import tune_from_file

    result = tune_from_file(auto.latents, target=auto.target, criterion=auto.criterion)
    nu = getattr(result, "recommended_nu_relative" if relative else "recommended_nu", None)
    if nu is None:
        raise RNAError(f"no noise scale meets the robustness target {auto.target} ({result.note})",
                       where="rna.auto.target", fix="lower rna.auto.target or set rna.noise to a number")
    ratio = result.recommended_nu / result.rms if result.rms else None
    if ratio is not None and ratio > auto.max_relative:
        raise RNAError(f"the tuned nu {result.recommended_nu:.4g} is {ratio:.1f}x the layer's activation RMS "
                       f"{result.rms:.4g} ({auto.criterion} criterion, target {auto.target}); noise that large "
                       "overwhelms the retain signal and undoes unlearning", where="rna.noise",
                       fix="use rna.auto.criterion=first-order, lower rna.auto.target, raise rna.auto.max_relative "
                           "deliberately, or set rna.noise to a number")
    auto.chosen = {"nu": float(nu), "relative_to": "rms" if relative else "absolute",
                   "nu_absolute": float(result.recommended_nu), "rms": result.rms, "nu_over_rms": ratio,
                   "dim": result.dim, "criterion": auto.criterion, "target": auto.target, "note": result.note}
    log = logging.getLogger(__name__)
    if ratio is None:
        log.warning("rna: nu auto-tuned to %.4g, but the latents hold no rms: its size against the activations "
                    "is unchecked", nu)
    log.warning("rna: nu auto-tuned to %.4g (%s x the activation RMS) from %s: %s criterion, target %s; %s", nu,
                "?" if ratio is None else f"{ratio:.3g}", auto.latents, auto.criterion, auto.target, result.note)
    return float(nu)


def load_config(path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> tuple[RunConfig, Any]:
    """Parse and validate a run config (a YAML file or a mapping); returns ``(RunConfig, method options)``."""
    from rna_train.methods import get_method

    raw = load_raw(path, overrides, shorthands(RunConfig))
    cfg = from_dict(RunConfig, raw)
    method_data = dict(cfg.method)
    name = method_data.pop("name", None)
    if not isinstance(name, str):
        raise RNAError("missing method name", where="method.name", fix="set method.name (see `rna methods`)")
    method_cls = get_method(name)
    options = from_dict(method_cls.Options, method_data, "method")
    cfg.method = {"name": name, **dataclasses.asdict(options)}
    method_cls.check_rna(options, cfg.rna.mode, options.layer if cfg.rna.layer is None else cfg.rna.layer)
    _check_latents_match(cfg)
    _check_lengths(cfg)
    if cfg.model.name_or_path is None and cfg.model.from_config is None:
        raise RNAError("no model given", where="model.name_or_path",
                       fix="set model.name_or_path (Hub id or folder) or model.from_config")
    if not cfg.data.forget:
        raise RNAError("no forget corpus", where="data.forget", fix="add at least one forget topic")
    if not cfg.data.retain.path and method_cls.uses_retain(options):
        raise RNAError("no retain corpus", where="data.retain.path", fix="set data.retain.path")
    lengths = [cfg.data.max_length] + [t.max_length for t in cfg.data.forget if t.max_length is not None]
    if cfg.data.min_length > min(lengths):
        raise RNAError(f"min_length {cfg.data.min_length} exceeds max_length {min(lengths)}",
                       where="data.min_length", fix="lower data.min_length")
    if cfg.train.eval.every:
        from rna_train.eval.registry import check_inputs

        check_inputs(cfg.train.eval.metrics, dataclasses.asdict(cfg.train.eval))
    if cfg.train.warmup_steps > cfg.train.steps:
        raise RNAError(f"warmup_steps {cfg.train.warmup_steps} exceeds train.steps {cfg.train.steps}",
                       where="train.warmup_steps", fix="set train.warmup_steps to at most train.steps")
    late = [s for s in cfg.train.snapshot_steps if s > cfg.train.steps]
    if late:
        raise RNAError(f"snapshot steps {late} are after the last step {cfg.train.steps}", where="train.snapshot_steps",
                       fix="list steps between 1 and train.steps")
    names = [t.name for t in cfg.data.forget]
    if len(set(names)) != len(names):
        raise RNAError(f"forget topic names repeat: {names}", where="data.forget",
                       fix="give each topic its own name")
    for i, topic in enumerate(cfg.data.forget):
        if not topic.path:
            raise RNAError("no files", where=f"data.forget.{i}.path", fix="set the topic's path")
    for where, corpus in [*((f"data.forget.{i}", t) for i, t in enumerate(cfg.data.forget)),
                          ("data.retain", cfg.data.retain)]:
        if corpus.streaming and corpus.limit is None:
            raise RNAError("streaming reads the first `limit` documents, and no limit is set", where=f"{where}.limit",
                           fix=f"set {where}.limit (e.g. 10000), or {where}.streaming=false")
    return cfg, options


def _model_config_value(model: ModelConfig, *keys: str) -> int | None:
    """The first of ``keys`` in the model's config (``from_config`` or a local folder's config.json,
    also under ``text_config``), if readable; nothing is downloaded."""
    import json

    data: dict[str, Any] = dict(model.from_config or {})
    path = Path(model.name_or_path or "") / "config.json"
    if model.from_config is None and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    for source in (data, data.get("text_config") or {}):
        for key in keys:
            if isinstance(source.get(key), int):
                return int(source[key])
    return None


def _hidden_size(model: ModelConfig) -> int | None:
    """The model's hidden size, if its config is readable here."""
    return _model_config_value(model, "hidden_size", "n_embd")


def _check_lengths(cfg: RunConfig) -> None:
    """Sequence lengths within the model's position window (GPT-2 would crash mid-run, Llama train past it)."""
    window = _model_config_value(cfg.model, "max_position_embeddings", "n_positions")
    if window is None:
        return
    longest = max([cfg.data.max_length] + [t.max_length for t in cfg.data.forget if t.max_length is not None])
    if longest > window:
        raise RNAError(f"max_length {longest} exceeds the model's position window {window}", where="data.max_length",
                       fix=f"set data.max_length (and any data.forget.N.max_length) to at most {window}")


def _check_latents_match(cfg: RunConfig) -> None:
    """``nu: auto`` latents must come from a layer of this model's width."""
    chosen = cfg.rna.auto.chosen
    if not chosen or cfg.rna.mode == "off":
        return
    hidden = _hidden_size(cfg.model)
    if hidden is not None and chosen.get("dim") not in (None, hidden):
        raise RNAError(f"the latents have dimension {chosen['dim']} but the model's hidden size is {hidden}",
                       where="rna.auto.latents", fix="audit this model (`rna audit --model ...`) and pass its latents")


def dump_yaml(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
