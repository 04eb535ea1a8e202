"""The robustness suite's config: a YAML file (optional) plus ``key=value`` overrides, checked once.

Every field has a default that runs the whole suite on SmolLM2-135M on 2 CPU cores in about 15
minutes per unlearned model; the section blocks (``mmlu``, ``keyword_text``, ``relearn``,
``quantize``, ``gcg``) hold each section's budget. Paths are checked to exist at load, before any
model is loaded or any folder created.
"""
# ruff: noqa: RUF009  (field() returns a dataclasses.Field with metadata, like dataclasses.field)

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.schema import field, from_dict, load_raw

#: Sections in the order they run (cheap and model-independent first, attacks last).
DEFAULT_SECTIONS = ["text_nll", "mmlu", "keyword_text", "quantize", "relearn", "gcg"]


@dataclasses.dataclass
class MMLUSection:
    """lm-eval tasks on the local MMLU asset (``rna assets fetch mmlu``)."""

    tasks: list[str] = field(["mmlu", "mmlu_sars"], doc="lm-eval task names (local: mmlu, mmlu_sars, ...)")
    questions: int = field(100, min=1, doc="questions per task, drawn at random across subjects (seed)")
    batch_size: int = field(8, min=1, doc="lm-eval batch size")
    wmdp: str | None = field(None, doc="folder with the cais/wmdp files (tasks wmdp_bio, wmdp_cyber, wmdp_chem)")


@dataclasses.dataclass
class KeywordSection:
    """One word inserted into retain text: the keyword effect and its excess over the base model."""

    chunks: int = field(32, min=2, doc="retain chunks scored")
    n_keywords: int = field(40, min=2, doc="forget keywords mined (and matched controls)")
    keywords_per_chunk: int = field(6, min=1, doc="keywords per group per chunk")
    suffix_tokens: int = field(24, min=1, doc="tokens scored after the insertion point")
    head_tokens: int = field(8, min=1, doc="the first suffix tokens, reported apart")
    batch_size: int = field(16, min=1, doc="sequences per forward pass")


@dataclasses.dataclass
class RelearnSection:
    """Fine-tuning on held-out forget texts (``attack_texts``)."""

    steps: list[int] = field([0, 5, 10, 20], doc="step counts scored")
    lrs: list[float] = field([1e-5, 3e-5], doc="learning rates")
    lora_rank: int = field(0, min=0, doc="0: full fine-tuning; r: LoRA rank r")
    batch_size: int = field(4, min=1, doc="texts per step")


@dataclasses.dataclass
class QuantizeSection:
    """Weight-only quantization (optimum-quanto)."""

    bits: list[int] = field([8, 4], doc="bit widths (8, 4)")
    backend: str = field("auto", choices=("auto", "quanto", "bitsandbytes"), doc="quantization backend")


@dataclasses.dataclass
class GCGSection:
    """GCG string optimised on ``attack_texts``, transferred to ``forget`` (see rna_train.attacks.gcg)."""

    preset: str = field("cpu", choices=("cpu", "gpu"), doc="starting budget")
    steps: int | None = field(None, min=1, doc="optimisation steps (default: the preset's)")
    search_width: int | None = field(None, min=1, doc="candidates per step (default: the preset's)")
    n_tokens: int | None = field(None, min=1, doc="string length in tokens (default: the preset's)")
    train_prompts: int | None = field(None, min=2, doc="prompts optimised on (default: the preset's)")

    def spec(self, seed: int) -> Any:
        """The :class:`~rna_train.attacks.gcg.GCGSpec` this section runs."""
        from rna_train.attacks.gcg import preset_spec

        given = {k: v for k in ("steps", "search_width", "n_tokens", "train_prompts")
                 if (v := getattr(self, k)) is not None}
        return preset_spec(self.preset, seed=seed, **given)


@dataclasses.dataclass
class SuiteConfig:
    """What ``rna robustness`` runs: the models, the texts and each section's budget."""

    models: list[str] = field([], doc="unlearned model folders (also positional arguments)")
    labels: list[str] = field([], doc="names of the models in the report (default: from the run's config)")
    base: str | None = field(None, doc="base model folder (the reference every section is compared with)")
    forget: str | None = field(None, doc="held-out forget texts")
    retain: str | None = field(None, doc="held-out retain texts (also the keyword section's text)")
    attack_texts: str | None = field(None, doc="forget texts for relearn and GCG, held out from `forget`")
    forget_corpus: str | None = field(None, doc="the forget training corpus (mining of keyword_text's "
                                      "forget words; default: attack_texts)")
    text_field: str = field("text", doc="field holding the text")
    sections: list[str] = field(DEFAULT_SECTIONS, doc="sections to run, in order")
    max_texts: int = field(64, min=2, doc="texts scored per corpus")
    max_length: int = field(64, min=2, doc="tokens scored per text")
    seed: int = field(0, min=0, doc="seed of every sampled choice")
    device: str | None = field(None, doc="cpu | cuda (default: cuda when available)")
    mmlu: MMLUSection = field(MMLUSection)
    keyword_text: KeywordSection = field(KeywordSection)
    relearn: RelearnSection = field(RelearnSection)
    quantize: QuantizeSection = field(QuantizeSection)
    gcg: GCGSection = field(GCGSection)


def load_suite(path: str | Path | None, overrides: Sequence[str] = ()) -> SuiteConfig:
    """The validated suite config: known sections, their inputs given and present, labels matching."""
    from rna_train.eval.registry import sections

    cfg = from_dict(SuiteConfig, load_raw(path, overrides))
    if not cfg.models:
        raise RNAError("no model to evaluate", where="models", fix="pass the unlearned model folder(s)")
    if not cfg.base:
        raise RNAError("no base model", where="--base", fix="pass the model the unlearned ones started from")
    if cfg.labels and len(cfg.labels) != len(cfg.models):
        raise RNAError(f"{len(cfg.labels)} labels for {len(cfg.models)} models", where="labels",
                       fix="give one label per model, or none")
    known = sections()
    unknown = [s for s in cfg.sections if s not in known]
    if unknown or not cfg.sections or len(set(cfg.sections)) != len(cfg.sections):
        raise RNAError(f"bad section list {cfg.sections}", where="sections",
                       fix=f"list each section once, from {', '.join(known)}")
    for section in cfg.sections:
        for key in known[section].needs:
            value = getattr(cfg, key)
            if not value:
                raise RNAError(f"section {section!r} needs {key}", where=f"--{key.replace('_', '-')}",
                               fix="pass the file, or drop the section with sections=[...]")
            if not Path(value).exists():
                raise RNAError("file not found", where=f"{key}={value}", fix="check the path")
            _check_texts(value, key, cfg.text_field)
        if known[section].section.check is not None:
            known[section].section.check(cfg)
    _check_models(cfg)
    return cfg


def _check_texts(path: str, key: str, text_field: str) -> None:
    from rna_train.data import read_texts

    if not any(t.strip() for t in read_texts(path, text_field)):
        raise RNAError("no non-empty texts", where=f"{key}={path}",
                       fix=f"pass a file whose {text_field!r} field holds documents")


def _check_models(cfg: SuiteConfig) -> None:
    """Every model folder exists; full model folders have a tokenizer equal to the base model's (the
    sections compare token by token); the device exists."""
    from rna_train.eval.loading import pick_device
    from rna_train.models import check_local_path, load_tokenizer

    vocab = None
    for where, path in (("base", cfg.base), *(("models", m) for m in cfg.models)):
        check_local_path(path, where)
        if not (Path(path) / "config.json").is_file():
            continue  # a Hub id or an adapter folder: checked when loaded
        got = load_tokenizer(path).get_vocab()
        if vocab is None and where == "base":
            vocab = got
        elif vocab is not None and got != vocab:
            raise RNAError("this model's tokenizer differs from the base model's", where=f"{where}: {path}",
                           fix="evaluate models unlearned from --base (the suite compares them token by token)")
    pick_device(cfg.device)
