"""Fixtures for the trainer tests: one torch thread, a tokenizer and corpora built offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import train_helpers as helpers


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with other users: keep torch to one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer folder and forget/retain JSONL corpora, built once per session."""
    root = tmp_path_factory.mktemp("assets")
    paths = helpers.write_corpora(root / "data")
    paths["tokenizer"] = helpers.build_tokenizer(root / "tokenizer")
    return paths
