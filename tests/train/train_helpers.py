"""Shared builders for the trainer tests: an offline tokenizer, fixture corpora, tiny configs."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch


def _words(text: str) -> list[str]:
    return text.split()


FORGET_WORDS = _words("virus protein spike cell gene pathogen toxin strain host receptor enzyme "
                      "bacteria vaccine culture lab sample")
RETAIN_WORDS = _words("history king river war city music art language trade empire poem law "
                      "market farm school church")
COMMON = ["the", "a", "of", "and", "in", "is", "was", "to", "with", "for", "on", "by"]
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]

TINY = {
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128},
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 4, "n_head": 4, "n_positions": 128,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0},
}


def sentences(words: tuple[str, ...] | list[str], n: int, seed: int, lo: int = 6, hi: int = 14) -> list[str]:
    """``n`` random sentences of ``lo``..``hi`` words from ``words`` plus function words."""
    rng = random.Random(seed)
    pool = list(words) + COMMON
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def build_tokenizer(folder: Path) -> Path:
    """A word-level fast tokenizer over the fixture vocabulary (adds <s>), saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(FORGET_WORDS + RETAIN_WORDS + COMMON))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    refusal_words = _words("i don't know . i'm not sure about that sorry can't help with have no idea "
                     "answer to")
    for w in refusal_words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    """One JSON object per line with the text under ``field``."""
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def write_corpora(folder: Path, n_forget: int = 8, n_retain: int = 8) -> dict[str, Path]:
    """Two forget topics (bio, cyber-like) and a retain corpus as JSONL files."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "bio": write_jsonl(folder / "bio.jsonl", sentences(FORGET_WORDS[:8], n_forget, 1)),
        "cyber": write_jsonl(folder / "cyber.jsonl", sentences(FORGET_WORDS[8:], n_forget, 2)),
        "retain": write_jsonl(folder / "retain.jsonl", sentences(RETAIN_WORDS, n_retain, 3)),
    }


def run_config(tokenizer: Path, corpora: dict[str, Path], out: Path, arch: str = "llama",
               method: dict[str, Any] | None = None, rna: dict[str, Any] | None = None,
               topics: int = 1, **train: Any) -> dict[str, Any]:
    """A raw config dict for a tiny model (layer l = 2 of 4)."""
    names = ["bio", "cyber"][:topics]
    return {
        "output_dir": str(out),
        "seed": 0,
        "model": {"from_config": dict(TINY[arch]), "tokenizer": str(tokenizer)},
        "data": {"forget": [{"name": n, "path": str(corpora[n]), "steering_coef": 6.5 + i}
                            for i, n in enumerate(names)],
                 "retain": {"path": str(corpora["retain"])}, "max_length": 32},
        "method": {"name": "rmu", "layer": 2, **(method or {})},
        "rna": rna or {"mode": "off"},
        "train": {"steps": 3, "batch_size": 4, "lr": 1e-2, "progress": False, "checkpoint_every": 0,
                  "save_model": False, "log_every": 100, **train},
    }


def assert_same_run(a: Any, b: Any) -> None:
    """Two :class:`TrainResult` s agree: every logged value (rel 1e-10) and every final weight (1e-11).

    The tolerances are float64 rounding of differently ordered sums, far below any real change.
    """
    for row_a, row_b in zip(a.metrics, b.metrics, strict=True):
        assert row_a.keys() == row_b.keys()
        for key, value in row_a.items():
            if isinstance(value, float):
                assert value == pytest.approx(row_b[key], rel=1e-10, abs=1e-12), (key, row_a, row_b)
    params = dict(b.model.named_parameters())
    for name, value in a.model.named_parameters():
        torch.testing.assert_close(value, params[name], rtol=1e-11, atol=1e-12)
