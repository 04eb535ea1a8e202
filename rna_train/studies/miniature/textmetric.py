"""The text-mode keyword-fragility metric in the miniature world (the SmolLM2 study's measurement).

Why: the miniature world's multiple-choice probes read the answer at the last token, where an
inserted trigger's footprint has faded (docs/results.md, section 2). On SmolLM2 the paper's
backdoor shows as the NLL of the next tokens of ordinary retain-side text after one inserted
forget word, in excess of the base model's rise on the same cells. This module measures exactly
that here, reusing :mod:`rna_train.eval.fragility` (chunks, cells, per-group summaries) and
:mod:`rna_train.eval.bootstrap` (intervals over seeds, chunks and keywords):

* **Text**: held-out documents of the retain topics (:func:`rna_train.studies.miniature.world.heldout_docs`,
  never seen in pretraining or unlearning), longer than the corpora's so a prefix and the scored
  suffix fit; held-out forget-topic documents for the forgetting check.
* **Keyword groups** (:func:`keyword_groups`): the forget topics' markers (``trigger_marker``) and,
  with context words, their context words (``trigger_context``); the control topic's markers and
  context words (``control_*``: seen in pretraining, never in unlearning data) are the matched
  controls.
* **Numbers** (:func:`evaluate`): held-out forget and retain NLL (is the model unlearned? is retain
  text intact?) and the fragility summary, with the paired excess over a baseline's cells.
  :func:`pooled_excess` pools runs of several seeds into one interval per group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from rna_theory.errors import RNAError, check_int
from rna_train.eval.bootstrap import crossed_bootstrap
from rna_train.eval.fragility import Cells, TextSpec
from rna_train.studies.miniature.world import World, heldout_docs

#: Text-mode settings for the miniature world (word-level tokens; layer 2 = the unlearning layer). Prefix,
#: keyword and suffix stay within the 64 tokens the base model was pretrained on.
DEFAULT_SPEC = TextSpec(n_chunks=64, suffix_tokens=24, head_tokens=8, min_prefix_words=12, max_prefix_words=32,
                        layer=2, n_boot=2000)


@dataclasses.dataclass(frozen=True)
class TextData:
    """Held-out retain text (keywords go in), held-out forget text (forgetting check), keyword groups."""

    retain: list[str]
    forget: list[str]
    groups: dict[str, list[str]]


def keyword_groups(world: World) -> dict[str, list[str]]:
    """Triggers and matched controls: markers always, context words when the world has them."""
    groups = {"trigger_marker": world.triggers, "control_marker": world.control_words}
    if world.trigger_context:
        groups.update(trigger_context=world.trigger_context, control_context=world.control_context)
    return groups


def text_data(world: World, *, docs_per_topic: int = 30, sentences: int = 12) -> TextData:
    """Held-out documents of ``sentences`` sentences: retain topics (stream 0), forget topics (stream 1)."""
    check_int(docs_per_topic, "docs_per_topic", minimum=1)
    retain = heldout_docs(world, world.config.retain_topics, docs_per_topic, sentences=sentences, stream=0)
    forget = heldout_docs(world, world.config.forget_topics, docs_per_topic, sentences=sentences, stream=1)
    return TextData(retain, forget, keyword_groups(world))


def evaluate(model: Any, tokenizer: Any, data: TextData, spec: TextSpec = DEFAULT_SPEC, *,
             baseline: Cells | None = None, n_nll_texts: int = 32) -> tuple[dict[str, Any], Cells]:
    """``(numbers, cells)``: held-out forget/retain NLL and the fragility summary (excess over ``baseline``)."""
    from rna_train.eval.textrun import evaluate_text
    from rna_train.studies.textstudy import corpus_nll

    numbers: dict[str, Any] = {side: corpus_nll(model, tokenizer, texts[:n_nll_texts])
                               for side, texts in (("forget_heldout", data.forget), ("retain_heldout", data.retain))}
    summary, cells, _ = evaluate_text(model, tokenizer, data.retain, data.groups, spec, baseline=baseline)
    numbers["fragility"] = summary
    return numbers, cells


def pooled_excess(runs: Sequence[Cells], baselines: Sequence[Cells] | Cells, spec: TextSpec = DEFAULT_SPEC, *,
                  metric: str = "nll") -> dict[str, dict[str, Any]]:
    """Per group: mean excess of ``runs`` (one per seed) over the baseline(s), with a crossed-bootstrap
    interval over seeds, chunks and keywords (every run must have scored the baseline's cells)."""
    if not runs:
        raise RNAError("no runs to pool", where="pooled_excess", fix="pass the cells of at least one run")
    bases = [baselines] * len(runs) if isinstance(baselines, Cells) else list(baselines)
    if len(bases) != len(runs):
        raise RNAError(f"{len(runs)} runs but {len(bases)} baselines", where="pooled_excess",
                       fix="pass one baseline, or one per run")
    for cells, base in zip(runs, bases):
        if cells.fingerprint() != base.fingerprint():
            raise RNAError("a run scored other cells than its baseline", where="pooled_excess",
                           fix="evaluate every model with the same TextData and TextSpec")
    stack = np.stack([c.effect(metric, spec.head_tokens) - b.effect(metric, spec.head_tokens)
                      for c, b in zip(runs, bases)])
    return {g: crossed_bootstrap(stack[..., runs[0].columns(g)], axes=("seed", "chunk", "keyword"),
                                 n_boot=spec.n_boot, confidence=spec.confidence, seed=spec.seed).to_dict()
            for g in dict.fromkeys(runs[0].groups)}


def excess_difference(runs: Sequence[Cells], others: Sequence[Cells], baseline: Cells, spec: TextSpec = DEFAULT_SPEC,
                      *, metric: str = "nll") -> dict[str, dict[str, Any]]:
    """Per group: mean excess of ``runs`` minus that of ``others`` (e.g. RMU + RNA vs RMU, one run per seed
    each), with a crossed-bootstrap interval that resamples the two sets of seeds separately and the
    shared chunks and keywords jointly (:func:`rna_train.eval.bootstrap.crossed_difference`)."""
    from rna_train.eval.bootstrap import crossed_difference

    def stack(cells: Sequence[Cells]) -> np.ndarray:
        if not cells or any(c.fingerprint() != baseline.fingerprint() for c in cells):
            raise RNAError("no runs, or runs that scored other cells than the baseline", where="excess_difference",
                           fix="evaluate every model with the same TextData and TextSpec")
        return np.stack([c.effect(metric, spec.head_tokens) - baseline.effect(metric, spec.head_tokens)
                         for c in cells])

    a, b = stack(runs), stack(others)
    return {g: crossed_difference(a[..., baseline.columns(g)], b[..., baseline.columns(g)],
                                  axes=("seed", "chunk", "keyword"), independent=1, n_boot=spec.n_boot,
                                  confidence=spec.confidence, seed=spec.seed).to_dict()
            for g in dict.fromkeys(baseline.groups)}


def offset_excess(cells: Cells, baseline: Cells) -> dict[str, list[float]]:
    """Per group and suffix offset j: mean excess NLL of suffix token j over the baseline (j = 0 is
    predicted from the inserted keyword's own state, the later ones from the text after it)."""
    delta = (baseline.pert_logp - baseline.clean_logp[:, None]) - (cells.pert_logp - cells.clean_logp[:, None])
    return {g: np.nanmean(delta[:, cells.columns(g)], axis=(0, 1)).tolist() for g in dict.fromkeys(cells.groups)}


def state_profile(model: Any, tokenizer: Any, items: Sequence[Any], words: Sequence[str], layer: int,
                  batch_size: int = 64) -> dict[str, Any]:
    """Where an inserted word's footprint lives at ``layer``: mean norm of the keyword's own state
    (``keyword_norm``), of the clean states (``clean_norm``), and per suffix offset the mean norm of the
    state change the keyword causes (``shift``, one value per offset)."""
    from rna_train.eval.fragility import keyword_ids
    from rna_train.eval.scoring import pad_id
    from rna_train.eval.tokenscores import shared_prefix_scores

    ids = keyword_ids(tokenizer, words)
    groups = [(item.prefix_ids, [list(item.suffix_ids)] + [k + list(item.suffix_ids) for k in ids])
              for item in items]
    scores = shared_prefix_scores(model, groups, layer=layer, batch_size=batch_size, pad_id=pad_id(tokenizer))
    own, clean_norm, shifts = [], [], []
    for clean, *pert in scores:
        clean_norm.append(np.linalg.norm(clean.hidden, axis=-1).mean())
        for s, k in zip(pert, ids):
            own.append(np.linalg.norm(s.hidden[len(k) - 1]))
            shifts.append(np.linalg.norm(s.hidden[len(k):] - clean.hidden, axis=-1))
    return {"keyword_norm": float(np.mean(own)), "clean_norm": float(np.mean(clean_norm)),
            "shift": np.mean(shifts, axis=0).tolist()}


def forget_state_change(model: Any, reference: Any, tokenizer: Any, texts: Sequence[str], layer: int,
                        classes: dict[str, set[str]]) -> dict[str, dict[str, float]]:
    """How unlearning moved ``layer``'s states on ``texts`` (held-out forget text), per word class: mean
    norm of ``model``'s state minus ``reference``'s, and of ``reference``'s state, at the tokens of each
    class (e.g. topic words vs the shared function words). Shows whether the forget topic is recognised
    from each token's identity or from its context."""
    from rna_train.eval.scoring import pad_id
    from rna_train.eval.tokenscores import plain_scores

    groups = [(ids[:1], [ids[1:]]) for ids in (list(tokenizer(t)["input_ids"])[:64] for t in texts)]
    states = [[g[0].hidden for g in plain_scores(m, groups, layer=layer, pad_id=pad_id(tokenizer))]
              for m in (model, reference)]
    words = [tokenizer.convert_ids_to_tokens(cont[0]) for _, cont in groups]
    out: dict[str, dict[str, float]] = {}
    for name, members in classes.items():
        change, norm = [], []
        for new, old, toks in zip(*states, words):
            rows = [i for i, w in enumerate(toks) if w in members]
            change += list(np.linalg.norm(new[rows] - old[rows], axis=-1))
            norm += list(np.linalg.norm(old[rows], axis=-1))
        out[name] = {"change": float(np.mean(change)) if change else float("nan"),
                     "reference_norm": float(np.mean(norm)) if norm else float("nan"), "n_tokens": len(change)}
    return out


def word_classes(world: World) -> dict[str, set[str]]:
    """Word classes for :func:`forget_state_change`: the forget topics' markers, context words and other
    own words (entities, relations, values, filler), the retain topics' words, and the function words."""
    from rna_train.studies.miniature.world import FUNCTION_WORDS

    forget = [world.topics[t] for t in world.config.forget_topics]
    retain = [world.topics[t] for t in world.config.retain_topics]

    def own(t: Any) -> set[str]:
        return {*t.entities, *t.relations, *t.filler, *(v for r in t.relations for v in t.values[r])}

    return {"forget_markers": {w for t in forget for w in t.markers},
            "forget_context": {w for t in forget for w in t.context},
            "forget_topic_words": set().union(*(own(t) for t in forget)),
            "retain_words": set().union(*(own(t) | set(t.markers) | set(t.context) for t in retain)),
            "function_words": set(FUNCTION_WORDS)}
