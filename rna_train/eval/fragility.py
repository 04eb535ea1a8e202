"""Keyword fragility on text: how much one inserted word degrades a model's prediction of what follows.

Why: a 135M-parameter model is at chance on MMLU, so multiple-choice accuracy cannot show the
paper's backdoor; next-token prediction on ordinary text can (docs/results.md). For each chunk of a
(held-out, retain-side) corpus one insertion point is drawn (seeded per chunk); the text before it
is the *prefix*, the next ``suffix_tokens`` tokens after it the *scored suffix*. Conditions: clean
(prefix + suffix) and one per keyword (prefix + keyword + suffix). The three pieces are tokenised
separately (the suffix with its leading space, the keyword as `` keyword``), so the scored suffix
tokens are the same ids in every condition by construction.

Per (chunk, keyword) cell: the change of the suffix's mean NLL (``nll``; over the first
``head_tokens``: ``nll_head``) and of its top-1 next-token accuracy (``top1``, ``top1_head``), and,
with a layer, the mean norm of the change of that layer's states at the suffix positions (the
latent footprint). Each group's mean effect gets a pigeonhole-bootstrap interval over chunks *and*
keywords (:mod:`rna_train.eval.bootstrap`); against a baseline run on the same cells (e.g. the
base model) the paired *excess* (model effect minus baseline effect per cell) gets the same
interval. Every condition of a chunk shares the prefix, which is encoded once
(:func:`rna_train.eval.tokenscores.shared_prefix_scores`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError, check_int
from rna_train.eval.bootstrap import crossed_bootstrap

log = logging.getLogger(__name__)

FRAGILITY_FORMAT = "rna-fragility/1"
METRICS: tuple[str, ...] = ("nll", "nll_head", "top1", "top1_head")
#: Cells arrays absent from files written before they were recorded.
OPTIONAL: tuple[str, ...] = ("clean_pred", "pert_pred", "clean_margin")


@dataclasses.dataclass(frozen=True)
class TextSpec:
    """How chunks are cut and scored (every field is saved with the run)."""

    n_chunks: int = 64
    suffix_tokens: int = 24
    head_tokens: int = 8
    min_prefix_words: int = 16
    max_prefix_words: int = 48
    keywords_per_chunk: int | None = None
    seed: int = 0
    layer: int | None = None
    latent_rows: int = 4000
    batch_size: int = 64
    n_boot: int = 2000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("n_chunks", "suffix_tokens", "head_tokens", "min_prefix_words", "max_prefix_words",
                     "batch_size", "n_boot", "latent_rows"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.seed, "seed", minimum=0)
        if self.keywords_per_chunk is not None:
            check_int(self.keywords_per_chunk, "keywords_per_chunk", minimum=1)
        if self.min_prefix_words > self.max_prefix_words:
            raise RNAError(f"min_prefix_words {self.min_prefix_words} > max_prefix_words {self.max_prefix_words}",
                           where="text spec", fix="make the minimum at most the maximum")
        if self.head_tokens >= self.suffix_tokens:
            raise RNAError(f"head_tokens {self.head_tokens} >= suffix_tokens {self.suffix_tokens}",
                           where="text spec", fix="score more suffix tokens than head tokens (the state at "
                           "head position j predicts token j + 1)")


@dataclasses.dataclass(frozen=True)
class TextItem:
    """One chunk: source document, insertion word index, prefix ids and scored suffix ids."""

    doc: int
    position: int
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]


def build_items(texts: Sequence[str], tokenizer: Any, spec: TextSpec) -> list[TextItem]:
    """Up to ``spec.n_chunks`` items from documents taken in a seeded order (one per document).

    Each document draws its insertion point from its own generator seeded by ``(seed, doc)``, so an
    item does not depend on which other documents were used. Documents too short for the minimum
    prefix and the scored suffix are skipped.
    """
    order = np.random.default_rng(spec.seed).permutation(len(texts))
    items: list[TextItem] = []
    for doc in order:
        words = texts[int(doc)].split()
        last = len(words) - spec.suffix_tokens // 2
        if last <= spec.min_prefix_words:
            continue
        position = int(np.random.default_rng([spec.seed, int(doc)]).integers(spec.min_prefix_words, last))
        prefix = " ".join(words[max(0, position - spec.max_prefix_words):position])
        suffix = list(tokenizer(" " + " ".join(words[position:]), add_special_tokens=False)["input_ids"])
        prefix_ids = tuple(tokenizer(prefix)["input_ids"])
        if len(suffix) < spec.suffix_tokens or not prefix_ids:
            continue
        items.append(TextItem(int(doc), position, prefix_ids, tuple(suffix[:spec.suffix_tokens])))
        if len(items) == spec.n_chunks:
            break
    if not items:
        raise RNAError("no document is long enough for a prefix and the scored suffix", where="--text",
                       fix="use longer documents or lower --suffix-tokens / --min-prefix-words")
    if len(items) < spec.n_chunks:
        log.warning("only %d of %d requested chunks: the corpus has no more long-enough documents",
                    len(items), spec.n_chunks)
    return items


def keyword_ids(tokenizer: Any, keywords: Sequence[str]) -> list[list[int]]:
    """Token ids of each keyword as inserted (`` keyword``, no special tokens)."""
    ids = [list(tokenizer(" " + k, add_special_tokens=False)["input_ids"]) for k in keywords]
    empty = [k for k, i in zip(keywords, ids) if not i]
    if empty:
        raise RNAError(f"keywords encode to no tokens: {empty[:5]}", where="keywords",
                       fix="drop them or use a tokenizer that can encode them")
    return ids


def assignment(n_items: int, group_sizes: Sequence[int], spec: TextSpec) -> np.ndarray:
    """Boolean (items x keywords) mask of the cells scored: every keyword, or ``keywords_per_chunk``
    per group drawn per chunk from a generator seeded by ``(seed, chunk, group)``."""
    mask = np.zeros((n_items, sum(group_sizes)), dtype=bool)
    start = 0
    for g, size in enumerate(group_sizes):
        for i in range(n_items):
            k = spec.keywords_per_chunk
            pick = (np.arange(size) if k is None or k >= size
                    else np.random.default_rng([spec.seed, i, g, 1]).choice(size, size=k, replace=False))
            mask[i, start + pick] = True
        start += size
    return mask


@dataclasses.dataclass
class Cells:
    """Per-token scores of every chunk: clean ``(I, K)`` and per keyword ``(I, W, K)`` (NaN = not scored).

    ``shift[i, w]`` is the mean norm of the layer's state change at the suffix positions and
    ``clean_norm[i]`` the mean norm of the clean states there (NaN without a layer). ``clean_pred``
    / ``pert_pred`` hold the arg-max predictions (-1 = not scored) and ``clean_margin`` the clean
    probit margins; they are None in files written before they were recorded.
    """

    keywords: list[str]
    groups: list[str]
    items: list[TextItem]
    clean_logp: np.ndarray
    clean_top1: np.ndarray
    pert_logp: np.ndarray
    pert_top1: np.ndarray
    shift: np.ndarray
    clean_norm: np.ndarray
    clean_pred: np.ndarray | None = None
    pert_pred: np.ndarray | None = None
    clean_margin: np.ndarray | None = None

    def columns(self, group: str) -> list[int]:
        """Keyword columns of ``group``."""
        return [c for c, g in enumerate(self.groups) if g == group]

    def unchanged(self, head: int | None = None) -> np.ndarray | None:
        """(items x keywords) share of the predictions made *from* the first ``head`` suffix states (or
        all of them) that the keyword leaves unchanged (theory.md's robustness); None if not recorded.

        The state at suffix position j predicts suffix token j + 1, so these are the predictions of
        tokens 1..head: exactly the positions whose states the latent files hold and whose clean
        margins :func:`head_margins` returns (token 0 is predicted from the keyword's own state in
        one condition and the prefix's in the other)."""
        if self.pert_pred is None or self.clean_pred is None:
            return None
        span = slice(1, None if head is None else head + 1)
        same = (self.pert_pred[..., span] == self.clean_pred[:, None, span]).mean(-1)
        return np.where(self.pert_pred[..., 0] < 0, np.nan, same)

    def effect(self, metric: str, head: int) -> np.ndarray:
        """(items x keywords) change under each keyword: NLL up (``nll*``) or top-1 accuracy (``top1*``)."""
        if metric not in METRICS:
            raise RNAError(f"unknown metric {metric!r}", where="fragility", fix=f"use one of {', '.join(METRICS)}")
        span = slice(0, head) if metric.endswith("_head") else slice(None)
        if metric.startswith("nll"):
            return -self.pert_logp[..., span].mean(-1) + self.clean_logp[:, None, span].mean(-1)
        return self.pert_top1[..., span].mean(-1) - self.clean_top1[:, None, span].mean(-1)

    def fingerprint(self) -> str:
        """Hash of the cells' identity (items, keywords, groups, which cells were scored)."""
        h = hashlib.sha256(json.dumps([[dataclasses.astuple(i) for i in self.items], self.keywords,
                                       self.groups]).encode())
        h.update(np.packbits(~np.isnan(self.pert_logp[..., 0])).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> Path:
        """Write the arrays and the item/keyword tables to one npz (atomically)."""
        meta = {"keywords": self.keywords, "groups": self.groups, "items": [dataclasses.asdict(i) for i in self.items]}
        extra = {k: v for k in OPTIONAL if (v := getattr(self, k)) is not None}
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, clean_logp=self.clean_logp, clean_top1=self.clean_top1, pert_logp=self.pert_logp,
                                pert_top1=self.pert_top1, shift=self.shift, clean_norm=self.clean_norm,
                                meta=np.array(json.dumps(meta)), **extra)
        tmp.replace(path)  # atomic: a concurrent reader sees the old or the new file, never a partial one
        return path

    @classmethod
    def load(cls, path: Path) -> Cells:
        """Read what :meth:`save` wrote (a clear error for anything else)."""
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("clean_logp", "clean_top1", "pert_logp", "pert_top1", "shift",
                                            "clean_norm")}
                arrays.update({k: z[k] for k in OPTIONAL if k in z.files})
        except (OSError, KeyError, ValueError) as exc:
            raise RNAError(f"not a fragility cells file ({exc})", where=str(path),
                           fix="pass the folder of an `rna eval --text` run") from None
        items = [TextItem(d["doc"], d["position"], tuple(d["prefix_ids"]), tuple(d["suffix_ids"]))
                 for d in meta["items"]]
        return cls(meta["keywords"], meta["groups"], items, **arrays)


def score_cells(model: Any, tokenizer: Any, items: Sequence[TextItem], groups: dict[str, list[str]],
                spec: TextSpec, *, shared_prefix: bool = True) -> tuple[Cells, dict[str, tuple[np.ndarray, ...]]]:
    """Score every assigned cell; also returns per group paired (clean, perturbed) latent rows."""
    from rna_train.eval.scoring import pad_id
    from rna_train.eval.tokenscores import plain_scores, shared_prefix_scores
    from rna_train.progress import bar

    keywords = [k for words in groups.values() for k in words]
    group_of = [g for g, words in groups.items() for _ in words]
    kw_ids = keyword_ids(tokenizer, keywords)
    mask = assignment(len(items), [len(w) for w in groups.values()], spec)
    n, w, k = len(items), len(keywords), spec.suffix_tokens
    cells = Cells(keywords, group_of, list(items), np.zeros((n, k)), np.zeros((n, k)),
                  np.full((n, w, k), np.nan), np.full((n, w, k), np.nan), np.full((n, w), np.nan), np.full(n, np.nan),
                  np.zeros((n, k), dtype=np.int64), np.full((n, w, k), -1, dtype=np.int64), np.zeros((n, k)))
    latents: dict[str, list[list[np.ndarray]]] = {g: [[], []] for g in groups}
    score = shared_prefix_scores if shared_prefix else plain_scores
    fill = pad_id(tokenizer)
    log.info("scoring %d chunks x %d inserted keywords each (%d groups)", n, int(mask.sum(axis=1).max(initial=0)),
             len(groups))
    for i, item in enumerate(bar(items, desc="fragility", unit="chunk")):
        cols = np.flatnonzero(mask[i])
        conts = [list(item.suffix_ids)] + [kw_ids[c] + list(item.suffix_ids) for c in cols]
        (clean, *pert), = score(model, [(item.prefix_ids, conts)], layer=spec.layer,
                                batch_size=spec.batch_size, pad_id=fill)
        cells.clean_logp[i], cells.clean_top1[i] = clean.logprobs, clean.top1
        cells.clean_pred[i], cells.clean_margin[i] = clean.pred, clean.margin
        for c, s in zip(cols, pert):
            cells.pert_logp[i, c] = s.logprobs[-k:]
            cells.pert_top1[i, c] = s.top1[-k:]
            cells.pert_pred[i, c] = s.pred[-k:]
            if s.hidden is not None:
                diff = s.hidden[-k:] - clean.hidden
                cells.shift[i, c] = float(np.linalg.norm(diff, axis=-1).mean())
                rows = latents[group_of[c]]
                rows[0].append(clean.hidden[:spec.head_tokens])
                rows[1].append(s.hidden[-k:][:spec.head_tokens])
        if clean.hidden is not None:
            cells.clean_norm[i] = float(np.linalg.norm(clean.hidden, axis=-1).mean())
    stacked = {g: (np.concatenate(r[0]), np.concatenate(r[1])) for g, r in latents.items() if r[0]}
    return cells, stacked


def group_summary(effects: np.ndarray, group_of: Sequence[str], spec: TextSpec,
                  axes: tuple[str, ...] = ("chunk", "keyword")) -> dict[str, dict[str, Any]]:
    """Per group: mean of the cells (last axis = keywords) with a crossed-bootstrap interval."""
    out = {}
    for g in dict.fromkeys(group_of):
        cols = [c for c, name in enumerate(group_of) if name == g]
        out[g] = crossed_bootstrap(effects[..., cols], axes=axes, n_boot=spec.n_boot,
                                   confidence=spec.confidence, seed=spec.seed).to_dict()
    return out


def keyword_rows(cells: Cells, spec: TextSpec, baseline: Cells | None) -> list[dict[str, Any]]:
    """Per keyword: its group, mean NLL effect with an interval over chunks, top-1 effect, footprint."""
    nll = cells.effect("nll", spec.head_tokens)
    top1 = cells.effect("top1", spec.head_tokens)
    excess = None if baseline is None else nll - baseline.effect("nll", spec.head_tokens)
    rows = []
    for c, (word, group) in enumerate(zip(cells.keywords, cells.groups)):
        row: dict[str, Any] = {"keyword": word, "group": group,
                               "nll": crossed_bootstrap(nll[:, c], axes=("chunk",), n_boot=spec.n_boot,
                                                        confidence=spec.confidence, seed=spec.seed).to_dict(),
                               "top1": _nanmean(top1[:, c]), "shift": _nanmean(cells.shift[:, c])}
        if excess is not None:
            row["excess_nll"] = crossed_bootstrap(excess[:, c], axes=("chunk",), n_boot=spec.n_boot,
                                                  confidence=spec.confidence, seed=spec.seed).to_dict()
        rows.append(row)
    return rows


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def check_same_cells(cells: Cells, baseline: Cells, where: str) -> None:
    """Raise unless ``baseline`` scored exactly the same items, keywords and cells."""
    if cells.fingerprint() != baseline.fingerprint():
        raise RNAError("the baseline run scored other chunks, keywords or cells", where=where,
                       fix="evaluate both models with the same --text, keyword groups, --seed and chunk settings")


def summarize(cells: Cells, spec: TextSpec, baseline: Cells | None = None) -> dict[str, Any]:
    """Clean metrics, per-group effects (and excess over ``baseline``), per-keyword rows."""
    head = spec.head_tokens
    clean = {"nll": float(-cells.clean_logp.mean()), "nll_head": float(-cells.clean_logp[:, :head].mean()),
             "top1": float(cells.clean_top1.mean()), "top1_head": float(cells.clean_top1[:, :head].mean())}
    effects = {m: group_summary(cells.effect(m, head), cells.groups, spec) for m in METRICS}
    summary: dict[str, Any] = {"n_chunks": len(cells.items), "clean": clean, "effect": effects,
                               "shift": group_summary(cells.shift, cells.groups, spec),
                               "clean_state_norm": _nanmean(cells.clean_norm)}
    if baseline is not None:
        summary["excess"] = {m: group_summary(cells.effect(m, head) - baseline.effect(m, head), cells.groups, spec)
                             for m in METRICS}
        summary["baseline_clean"] = {"nll": float(-baseline.clean_logp.mean()),
                                     "top1": float(baseline.clean_top1.mean())}
    if cells.unchanged() is not None:
        summary["unchanged"] = {"head": group_summary(cells.unchanged(head), cells.groups, spec),
                                "all": group_summary(cells.unchanged(), cells.groups, spec)}
        margins = head_margins(cells, spec)
        summary["clean_margin_head"] = {"median": float(np.median(margins)), "mean": float(margins.mean())}
    summary["keywords"] = keyword_rows(cells, spec, baseline)
    return summary


def save_latent_groups(stem: Path, latents: dict[str, tuple[np.ndarray, ...]], spec: TextSpec,
                       margins: np.ndarray | None = None) -> None:
    """Per group, up to ``spec.latent_rows`` paired rows in the tuner's npz format (``STEM-<group>.npz``),
    with ``margins`` (the clean probit margins at the same positions) as the retain margins."""
    from rna_train.eval.audit import save_latents, subsample_rows

    for group, (clean, pert) in latents.items():
        clean, pert = subsample_rows(clean, pert, spec.latent_rows, spec.seed)
        rms = float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
        save_latents(Path(f"{stem}-{group}.npz"), clean, pert, margins=margins, rms=rms,
                     meta={"source": "rna_train.eval.fragility", "group": group, "layer": spec.layer,
                           "positions": f"first {spec.head_tokens} suffix tokens",
                           "margins": "clean next-token probit margins at those positions, all chunks"})


def head_margins(cells: Cells, spec: TextSpec) -> np.ndarray | None:
    """Clean probit margins of the predictions made from the first ``head_tokens`` suffix states (the
    latent rows), i.e. of suffix tokens 1..head_tokens, every chunk (flattened)."""
    if cells.clean_margin is None:
        return None
    return cells.clean_margin[:, 1:spec.head_tokens + 1].ravel()
