"""Fixtures for the reliability tests: the trainer tests' offline tokenizer and corpora."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import train_helpers as helpers


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer folder and forget/retain JSONL corpora, built once per session."""
    root = tmp_path_factory.mktemp("assets")
    paths = helpers.write_corpora(root / "data")
    paths["tokenizer"] = helpers.build_tokenizer(root / "tokenizer")
    return paths
