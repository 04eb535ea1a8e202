"""The text-mode evaluation pipeline behind ``rna eval --text`` (the CLI only parses arguments).

Reads a text corpus and keyword groups (given, or mined from a forget and a retain corpus), loads
the model, scores every (chunk, keyword) cell (:mod:`rna_train.eval.fragility`) and writes the run
folder: ``fragility.json`` (settings, groups, summary), ``cells.npz`` (per-token scores, the input
of paired comparisons), ``latents-<group>.npz`` with a layer (the tuner's format) and, when mined,
``keywords/`` (the groups and their scores). With a baseline run folder the paired excess over it
is part of the summary.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.eval.fragility import FRAGILITY_FORMAT, Cells, TextSpec

log = logging.getLogger(__name__)


def resolve_groups(groups: dict[str, list[str]], forget_corpus: Path | None, retain_corpus: Path, *,
                   tokenizer: Any, n_keywords: int, text_field: str = "text") -> tuple[dict[str, list[str]], Any]:
    """The given groups (``load_groups`` of the ``NAME=LIST`` specs), plus mined ones when a forget
    corpus is given; returns ``(groups, mined or None)``."""
    from rna_train.data import read_texts
    from rna_train.eval.mining import mine_keywords

    mined = None
    if forget_corpus is not None:
        mined = mine_keywords(read_texts(forget_corpus, text_field), read_texts(retain_corpus, text_field),
                              n=n_keywords, tokenizer=tokenizer)
        clash = set(groups) & set(mined.groups)
        if clash:
            raise RNAError(f"group names {sorted(clash)} are both given and mined", where="--group",
                           fix="rename the given groups or drop --forget-corpus")
        groups = {**mined.groups, **groups}
    if not groups:
        raise RNAError("no keyword groups", where="rna eval --text",
                       fix="pass --group NAME=LIST (e.g. --group control=control) or --forget-corpus PATH")
    return groups, mined


def load_baseline(folder: Path | None) -> Cells | None:
    """The cells of a previous ``rna eval --text`` run, or None."""
    if folder is None:
        return None
    path = folder / "cells.npz"
    if not path.is_file():
        raise RNAError("no cells.npz in the baseline folder", where=str(folder),
                       fix="pass the --out folder of an `rna eval --text` run of the baseline model")
    return Cells.load(path)


def evaluate_text(model: Any, tokenizer: Any, texts: Sequence[str], groups: dict[str, list[str]], spec: TextSpec, *,
                  baseline: Cells | None = None, shared_prefix: bool = True,
                  ) -> tuple[dict[str, Any], Cells, dict[str, Any]]:
    """``(summary, cells, latents)`` of one model (see :mod:`rna_train.eval.fragility`)."""
    from rna_train.eval.fragility import build_items, check_same_cells, score_cells, summarize

    items = build_items(texts, tokenizer, spec)
    cells, latents = score_cells(model, tokenizer, items, groups, spec, shared_prefix=shared_prefix)
    if baseline is not None:
        check_same_cells(cells, baseline, "--baseline")
    return summarize(cells, spec, baseline), cells, latents


def write_run(out: Path, payload: dict[str, Any], cells: Cells, latents: dict[str, Any], spec: TextSpec,
              mined: Any = None) -> Path:
    """Write the run folder (see the module docstring); ``fragility.json`` last."""
    from rna_train.eval.evaluate import write_json
    from rna_train.eval.fragility import head_margins, save_latent_groups

    out.mkdir(parents=True, exist_ok=True)
    cells.save(out / "cells.npz")
    if spec.layer is not None:
        save_latent_groups(out / "latents", latents, spec, head_margins(cells, spec))
    if mined is not None:
        mined.write(out / "keywords")
    return write_json(out / "fragility.json", payload)


def log_summary(summary: dict[str, Any]) -> None:
    """One line per group: NLL effect of one inserted word, and the excess over the baseline."""
    clean = summary["clean"]
    log.info("clean suffix NLL %.3f, top-1 %.3f (%d chunks)", clean["nll"], clean["top1"], summary["n_chunks"])
    for group, eff in summary["effect"]["nll"].items():
        line = f"{group}: +{eff['mean']:.3f} nats/token [{eff['low']:.3f}, {eff['high']:.3f}]"
        if "excess" in summary:
            ex = summary["excess"]["nll"][group]
            line += f", excess over baseline {ex['mean']:+.3f} [{ex['low']:+.3f}, {ex['high']:+.3f}]"
        log.info("%s", line)


def payload(summary: dict[str, Any], spec: TextSpec, groups: dict[str, list[str]], **info: Any) -> dict[str, Any]:
    """The ``fragility.json`` document."""
    from rna_train.eval.evaluate import now

    return {"format": FRAGILITY_FORMAT, "created": now(), **info, "settings": dataclasses.asdict(spec),
            "groups": groups, "summary": summary}
