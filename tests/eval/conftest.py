"""Fixtures for the evaluation tests: one torch thread, a tiny offline tokenizer, tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eval_helpers import PROBE, WIKI_OTHER, WIKI_TOPIC, wiki_docs


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep torch on one thread: the test machine is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _corpus() -> list[str]:
    from rna_train.eval.keywords import builtin_keywords

    lines = []
    for row in PROBE:
        lines.append(f"Question: {row['question']}\nAnswer: " + " ".join(row["choices"]))
    lines += builtin_keywords("forget") + builtin_keywords("control")
    lines.append("A. B. C. D. the of and to in is was for on with as by at from")
    return lines


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained offline on the probe text, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    out = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(out)
    return out


def _save_model(kind: str, seed: int, tokenizer_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.eos_token_id)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32) with the tiny tokenizer, saved to a folder."""
    return _save_model("llama", 0, tokenizer_dir, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def llama2_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A second tiny Llama (another seed): stands in for an unlearned checkpoint."""
    return _save_model("llama", 1, tokenizer_dir, tmp_path_factory.mktemp("llama2"))


@pytest.fixture(scope="session")
def gpt2_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer GPT-2 (hidden 32) with the tiny tokenizer."""
    return _save_model("gpt2", 0, tokenizer_dir, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def probe_file(tmp_path_factory) -> Path:
    """The 12-question native-format probe (one question carries a <script> tag)."""
    path = tmp_path_factory.mktemp("probe") / "probe.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PROBE), encoding="utf-8")
    return path


@pytest.fixture
def fake_cache(tmp_path, llama_dir, monkeypatch):
    """An asset cache holding a tiny Llama as "smollm2" and synthetic forget/retain text as "wikipedia"."""
    root = tmp_path / "cache"
    shutil.copytree(llama_dir, root / "assets" / "smollm2-135m-instruct")
    wiki = root / "assets" / "wikipedia"
    wiki.mkdir(parents=True)
    for name, docs in (("forget", wiki_docs(WIKI_TOPIC, 60, 1)), ("retain", wiki_docs(WIKI_OTHER, 120, 2))):
        (wiki / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    monkeypatch.setenv("RNA_CACHE_DIR", str(root))
    return root
