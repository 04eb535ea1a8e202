"""The project's single user-facing error type and argument validators.

Every bad input (CLI argument, config value, data file, latent array) is reported as an
:class:`RNAError` naming *what* is wrong, *where*, and *how to fix it*; the CLI prints it as one
line and exits with status 2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class RNAError(ValueError):
    """A user-facing error: what is wrong, where, and how to fix it.

    Subclasses ``ValueError`` so library callers can catch it generically; the CLI catches it
    to print a one-line message without a traceback.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        parts = [f"{where}: {what}" if where else what]
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))


def check_finite(value: Any, name: str, *, minimum: float | None = None, strict: bool = False,
                 maximum: float | None = None, fix: str | None = None) -> float:
    """Return ``value`` as a float after checking it is finite and inside the given range."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RNAError(f"must be a number, got {value!r}", where=name,
                       fix=fix or f"pass a number for {name}") from None
    if not math.isfinite(x):
        raise RNAError(f"must be finite, got {x}", where=name, fix=fix or f"pass a finite {name}")
    if minimum is not None and (x < minimum or (strict and x == minimum)):
        op = ">" if strict else ">="
        raise RNAError(f"must be {op} {minimum}, got {x}", where=name,
                       fix=fix or f"pass {name} {op} {minimum}")
    if maximum is not None and x > maximum:
        raise RNAError(f"must be <= {maximum}, got {x}", where=name,
                       fix=fix or f"pass {name} <= {maximum}")
    return x


def check_int(value: Any, name: str, *, minimum: int | None = None, fix: str | None = None) -> int:
    """Return ``value`` as an int after checking it is integral and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RNAError(f"must be an integer, got {value!r}", where=name,
                           fix=fix or f"pass an integer for {name}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise RNAError(f"must be >= {minimum}, got {value}", where=name,
                       fix=fix or f"pass {name} >= {minimum}")
    return value


def check_probability(value: Any, name: str, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1] when ``open_interval`` is False)."""
    x = check_finite(value, name, minimum=0.0, maximum=1.0)
    if open_interval and x in (0.0, 1.0):
        raise RNAError(f"must lie strictly between 0 and 1, got {x}", where=name,
                       fix=f"pass {name} in (0, 1)")
    return x


def check_array(value: Any, name: str, *, ndim: int | None = None, min_rows: int = 1,
                finite: bool = True) -> np.ndarray:
    """Return ``value`` as a float64 array with the given rank, enough rows, and finite entries."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RNAError("is not a numeric array", where=name, fix=f"pass a numeric array for {name}") from None
    if ndim is not None and arr.ndim != ndim:
        raise RNAError(f"must have {ndim} dimension(s), got shape {arr.shape}", where=name,
                       fix=f"reshape {name} to {ndim} dimension(s)")
    if arr.ndim == 0 or arr.shape[0] < min_rows or arr.size == 0:
        raise RNAError(f"needs at least {min_rows} row(s), got shape {arr.shape}", where=name,
                       fix=f"pass a non-empty {name}")
    if finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise RNAError(f"contains a non-finite value at index {bad}", where=name,
                       fix=f"remove NaN/Inf entries from {name}")
    return arr
