"""Long loops talk when stderr is not a terminal: a log line at the start, at most every LOG_EVERY
seconds, and at the end (once), naming the loop; nothing when INFO logging is off or the bar is
disabled."""

from __future__ import annotations

import logging

import pytest

from rna_train import progress


def test_non_terminal_progress_is_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="rna_train.progress"):
        assert list(progress.bar(range(3), desc="scoring", unit="batch")) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("scoring: 0/3 batch") and lines[-1].startswith("scoring: 3/3 batch")
    assert len(lines) == len(set(lines)) == 4  # 0, 1, 2, 3: no line repeated at close


def test_disabled_or_quiet_progress_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rna_train.progress"):
        assert list(progress.bar(range(3), desc="x", disable=True)) == [0, 1, 2]
    with caplog.at_level(logging.WARNING, logger="rna_train.progress"):
        assert list(progress.bar(range(3), desc="y")) == [0, 1, 2]
    assert not caplog.records
