"""Accuracy with binomial confidence intervals, overall and per subject."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rna_theory.errors import RNAError

#: Interval methods accepted by :func:`proportion_ci` (scipy's names in brackets).
CI_METHODS: dict[str, str] = {"wilson": "wilson", "clopper-pearson": "exact"}


def proportion_ci(successes: int, trials: int, *, confidence: float = 0.95,
                  method: str = "wilson") -> tuple[float, float]:
    """Two-sided binomial confidence interval (Wilson score or exact Clopper-Pearson) via scipy."""
    from scipy import stats

    if method not in CI_METHODS:
        raise RNAError(f"unknown interval method {method!r}", where="ci",
                       fix=f"use one of {', '.join(CI_METHODS)}")
    if trials <= 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence,
                                                                    method=CI_METHODS[method])
    return float(ci.low), float(ci.high)


def rate(successes: int, trials: int, *, confidence: float = 0.95, method: str = "wilson") -> dict[str, Any]:
    """``{"k", "n", "rate", "ci": [lo, hi]}`` for ``successes`` out of ``trials``."""
    lo, hi = proportion_ci(successes, trials, confidence=confidence, method=method)
    return {"k": int(successes), "n": int(trials), "rate": successes / trials if trials else float("nan"),
            "ci": [lo, hi]}


def summarize(flags: Sequence[bool], groups: Sequence[str], *, confidence: float = 0.95,
              method: str = "wilson") -> dict[str, Any]:
    """Overall and per-group rates of boolean ``flags`` (e.g. correct answers per subject)."""
    by_group: dict[str, list[int]] = {}
    for flag, group in zip(flags, groups, strict=True):
        counts = by_group.setdefault(group, [0, 0])
        counts[0] += bool(flag)
        counts[1] += 1
    return {
        "overall": rate(sum(bool(f) for f in flags), len(flags), confidence=confidence, method=method),
        "by_subject": {g: rate(k, n, confidence=confidence, method=method)
                       for g, (k, n) in sorted(by_group.items())},
    }
