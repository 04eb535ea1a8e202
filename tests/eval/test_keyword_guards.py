"""Keywords the tokenizer cannot see, and probe flags that would be silently ignored (issue 13, item 9)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rna_theory.errors import RNAError
from rna_train.eval.keywords import check_known_keywords, unknown_keywords


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "the": 2, "virus": 3, "gene": 4, "river": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def test_unknown_keywords_warn_then_refuse(caplog: pytest.LogCaptureFixture) -> None:
    tok = _word_tokenizer()
    assert unknown_keywords(tok, ["virus", "anthrax", "gene", "anthrax"]) == ["anthrax"]
    with caplog.at_level(logging.WARNING):
        check_known_keywords(tok, ["virus", "gene", "anthrax"], "--keywords")  # 1 of 3: a warning
    assert "33% of the inserted keywords" in caplog.text and "anthrax" in caplog.text
    with pytest.raises(RNAError, match="67% of the inserted keywords") as info:
        check_known_keywords(tok, ["anthrax", "smallpox", "virus"], "--keywords")
    assert info.value.where == "--keywords"
    check_known_keywords(tok, ["virus", "river"], "--keywords")  # all known: silent


def test_keywords_without_perturb_is_refused(llama_dir: Path, probe_file: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from rna_train.cli import main

    assert main(["eval", "--model", str(llama_dir), "--probe", str(probe_file), "--keywords", "bio",
                 "--out", str(tmp_path / "e")]) == 2
    assert "--keywords has no effect without --perturb" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
