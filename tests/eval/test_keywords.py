"""Shipped keyword lists: forget keywords and their length-matched neutral controls."""

from __future__ import annotations

import pytest

from rna_theory.errors import RNAError
from rna_train.eval.keywords import approx_tokens, builtin_keywords, parse_keywords, resolve_keywords


def test_lists_are_shipped_and_distinct():
    bio, cyber, control = (builtin_keywords(k) for k in ("bio", "cyber", "control"))
    assert "SARS-CoV-2" in bio and "anthrax" in bio and "SQL injection" in cyber
    assert builtin_keywords("forget") == bio + cyber
    assert not set(control) & set(bio + cyber)
    assert len(set(control)) == len(control)


def test_controls_match_forget_keywords_in_length_and_shape():
    forget, control = builtin_keywords("forget"), builtin_keywords("control")
    assert len(forget) == len(control)
    for f, c in zip(forget, control, strict=True):
        assert abs(len(f) - len(c)) <= 2, (f, c)
        assert len(f.split()) == len(c.split()), (f, c)
        assert abs(approx_tokens(f) - approx_tokens(c)) <= 1, (f, c)
        assert ("-" in f) == ("-" in c), (f, c)
    mean = lambda ws: sum(map(len, ws)) / len(ws)  # noqa: E731
    assert abs(mean(forget) - mean(control)) < 0.5


def test_resolve_file_and_errors(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# comment\nfoo  bar\n\nbaz # trailing\n", encoding="utf-8")
    assert resolve_keywords(str(path)) == ("mine", ["foo bar", "baz"])
    with pytest.raises(RNAError, match="neither a keyword list name nor a file"):
        resolve_keywords("nonexistent")
    with pytest.raises(RNAError, match="empty"):
        parse_keywords("# nothing\n", "x")
