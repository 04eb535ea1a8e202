"""Corpus reading in every format, tokenisation limits, deterministic batching, padding masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rna_theory.errors import RNAError
from rna_train.data import batch_indices, collate, load_corpus, read_texts, tokenize
from rna_train.models import load_tokenizer

TEXTS = ["virus protein spike", "the cell of a host", "gene"]


def test_read_every_format(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS) + "\n")
    (tmp_path / "a.json").write_text(json.dumps([{"body": t} for t in TEXTS]))
    (tmp_path / "a.txt").write_text("\n".join(TEXTS) + "\n\n")
    pq.write_table(pa.table({"body": TEXTS, "other": [1, 2, 3]}), tmp_path / "a.parquet")
    datasets.Dataset.from_dict({"body": TEXTS}).save_to_disk(str(tmp_path / "ds"))
    split = datasets.Dataset.from_dict({"body": TEXTS})
    datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "dd"))
    for name in ("a.jsonl", "a.json", "a.txt", "a.parquet", "ds", "dd"):
        assert read_texts(tmp_path / name, "body") == TEXTS, name


@pytest.mark.parametrize(("content", "where", "what"), [
    ('{"text": "ok"}\n[1, 2]\n', ":2", "JSON object"),
    ('{"text": "ok"}\n{"text": 5}\n', ":2", "not a string"),
    ('{"text": "ok"}\n\n{"txt": "x"}\n', ":3", "missing text field 'text'"),
    ('{"text": "ok"}\n{oops}\n', ":2", "malformed JSON"),
])
def test_jsonl_errors_name_the_line(tmp_path: Path, content: str, where: str, what: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RNAError) as info:
        read_texts(path, "text")
    assert info.value.where == f"{path}{where}" and what in info.value.what


def test_parquet_and_disk_missing_field(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": TEXTS}), tmp_path / "a.parquet")
    datasets.Dataset.from_dict({"body": TEXTS}).save_to_disk(str(tmp_path / "ds"))
    for name in ("a.parquet", "ds"):
        with pytest.raises(RNAError, match="missing text field 'text'"):
            read_texts(tmp_path / name, "text")
    with pytest.raises(RNAError, match="file not found"):
        read_texts(tmp_path / "nope.jsonl")


def test_tokenize_limits_and_truncation_side(assets: dict[str, Path]) -> None:
    tok = load_tokenizer(str(assets["tokenizer"]))
    full = tok("virus protein spike cell gene")["input_ids"]
    assert len(full) == 6  # <s> + 5 words
    right = tokenize(["virus protein spike cell gene"], tok, max_length=3)
    left = tokenize(["virus protein spike cell gene"], tok, max_length=3, truncation_side="left")
    assert right == [full[:3]] and left == [full[-3:]]
    assert tokenize(["gene", "virus protein spike"], tok, max_length=10, min_length=3) == [
        tok("virus protein spike")["input_ids"]]


def test_load_corpus_empty_after_filter(tmp_path: Path, assets: dict[str, Path]) -> None:
    tok = load_tokenizer(str(assets["tokenizer"]))
    path = tmp_path / "short.txt"
    path.write_text("gene\ncell\n")
    with pytest.raises(RNAError, match="none of 2 documents"):
        load_corpus("short", str(path), tok, max_length=8, min_length=3, where="data.retain")
    corpus = load_corpus("short", [str(path), str(path)], tok, max_length=8, min_length=2, limit=3)
    assert len(corpus) == 3


def test_collate_pads_right_with_mask() -> None:
    batch = collate([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batch_indices_are_deterministic_epochs() -> None:
    n, size = 10, 4
    first = [batch_indices(n, size, i, seed=1, stream=7) for i in range(5)]
    assert first == [batch_indices(n, size, i, seed=1, stream=7) for i in range(5)]
    flat = [i for b in first for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert first != [batch_indices(n, size, i, seed=2, stream=7) for i in range(5)]
    assert batch_indices(n, size, 1, seed=1, stream=7, shuffle=False) == [4, 5, 6, 7]
    assert torch.tensor(flat).max() < n


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), size=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_every_epoch_is_a_permutation(n: int, size: int, seed: int) -> None:
    """Consecutive batches walk through each epoch's documents exactly once."""
    batches = [batch_indices(n, size, i, seed=seed, stream=3) for i in range(2 * n)]
    flat = [i for b in batches for i in b]
    for epoch in range(len(flat) // n):
        assert sorted(flat[epoch * n:(epoch + 1) * n]) == list(range(n))
