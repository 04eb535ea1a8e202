"""Progress of long loops: a tqdm bar on a terminal; elsewhere (a log file, a pipe, CI) a log line at
most every :data:`LOG_EVERY` seconds and one at the end, so that long commands talk in logs too
(tqdm alone disables itself, or fills logs with carriage returns, when stderr is not a terminal)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("rna_train.progress")

#: Seconds between log lines when stderr is not a terminal.
LOG_EVERY = 30.0


class _LogBar(tqdm):
    """A tqdm whose display is a log line (its own output goes nowhere)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(file=io.StringIO(), mininterval=LOG_EVERY, maxinterval=LOG_EVERY, ascii=True)
        self._logged: int | None = None
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        d = self.format_dict
        if d["n"] == self._logged:
            return True
        self._logged = d["n"]
        total = f"/{d['total']}" if d.get("total") else ""
        log.info("%s: %d%s %s, %.0f s", d.get("prefix") or "progress", d["n"], total, d.get("unit") or "it",
                 d["elapsed"])
        return True


def bar(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
        leave: bool = True, disable: bool = False, **kwargs: Any) -> Any:
    """``tqdm(iterable, ...)`` on a terminal, logged progress otherwise; ``disable`` turns both off."""
    if disable or not sys.stderr.isatty():
        if disable or not log.isEnabledFor(logging.INFO):
            return tqdm(iterable, total=total, disable=True)
        return _LogBar(iterable, desc=desc, total=total, unit=unit, leave=leave, **kwargs)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, **kwargs)
