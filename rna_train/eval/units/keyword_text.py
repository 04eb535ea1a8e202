"""Suite section ``keyword_text``: one word inserted into held-out retain text (the reproduction
issue's measurement). The groups are mined once, on the base model's run, from the forget corpus
against the retain texts (forget words, on-topic words absent from the forget corpus with the
paper's SARS-CoV-2, frequency- and length-matched controls); every unlearned model is scored on the
same cells and compared with the base model pair by pair (excess), intervals over chunks and
keywords (crossed bootstrap). The run folders are those of ``rna eval --text``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rna_train.eval.registry import Row, Section, register_section


def _spec(ctx_cfg: Any) -> Any:
    from rna_train.eval.fragility import TextSpec

    k = ctx_cfg.keyword_text
    return TextSpec(n_chunks=k.chunks, suffix_tokens=k.suffix_tokens, head_tokens=k.head_tokens,
                    keywords_per_chunk=k.keywords_per_chunk, seed=ctx_cfg.seed, batch_size=k.batch_size)


def _mine(cfg: Any, forget: list[str], retain: list[str], tokenizer: Any) -> Any:
    from rna_train.eval.mining import mine_keywords

    return mine_keywords(forget, retain, n=cfg.keyword_text.n_keywords, tokenizer=tokenizer)


def _run(ctx: Any, name: str) -> dict[str, Any]:
    """Effect per group (and, for unlearned models, the excess over the base model's)."""
    from rna_train.eval.fragility import Cells
    from rna_train.eval.textrun import evaluate_text, payload, write_run

    model, tok = ctx.model(name)
    spec = _spec(ctx.cfg)
    folder = ctx.folder("keyword_text", name)
    if name == "base":
        mined = _mine(ctx.cfg, ctx.texts("forget_corpus"), ctx.texts("retain"), tok)
        groups, baseline = mined.groups, None
    else:
        groups, mined = ctx.result("keyword_text", "base")["groups"], None
        baseline = Cells.load(ctx.folder("keyword_text", "base") / "cells.npz")
    summary, cells, latents = evaluate_text(model, tok, ctx.texts("retain"), groups, spec, baseline=baseline)
    doc = payload(summary, spec, groups, label=name, model=ctx.labels[name], text=ctx.cfg.retain,
                  baseline="base" if baseline is not None else None)
    write_run(folder, doc, cells, latents, spec, mined)
    return {"groups": groups, "summary": {k: summary[k] for k in ("n_chunks", "clean", "effect", "excess")
                                          if k in summary}}


def _rows(result: Mapping[str, Any]) -> list[Row]:
    summary = result["summary"]
    rows = [Row(f"effect of one {group} word (nats/token)", stat, "lower")
            for group, stat in summary["effect"]["nll"].items()]
    rows += [Row(f"excess over base, {group} words (nats/token)", stat, "lower")
             for group, stat in summary.get("excess", {}).get("nll", {}).items()]
    return rows


def _check(cfg: Any) -> None:
    """The forget corpus yields the requested number of keywords (mining without a tokenizer)."""
    from rna_train.data import read_texts

    forget = [t for t in read_texts(cfg.forget_corpus or cfg.attack_texts, cfg.text_field) if t.strip()] \
        if (cfg.forget_corpus or cfg.attack_texts) else []
    if not forget:
        from rna_theory.errors import RNAError

        raise RNAError("keyword_text mines its forget words from forget_corpus (or attack_texts): none given",
                       where="--forget-corpus", fix="pass the forget training corpus")
    _mine(cfg, forget, [t for t in read_texts(cfg.retain, cfg.text_field) if t.strip()], None)
    _spec(cfg)


register_section("keyword_text", Section(_run, _rows, check=_check,
                                         title="Keyword fragility on text (one inserted word)"),
                 directions={"effect": "lower", "excess": "lower"}, needs=("retain",),
                 doc="NLL change of the next suffix_tokens tokens when one word is inserted into a held-out retain "
                     "chunk, per keyword group, and for each unlearned model its paired excess over the base model "
                     "on the same chunks and words (95 % crossed-bootstrap intervals over chunks and keywords). "
                     "The paper's backdoor: a positive excess for forget words, none for controls.")
