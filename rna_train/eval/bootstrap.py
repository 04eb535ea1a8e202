"""Bootstrap intervals for means over crossed designs (chunks x keywords, seeds x chunks x keywords).

Why: a keyword effect is measured on every (chunk, keyword) cell, and both the chunks and the
keywords are samples: an interval over chunks alone treats the keyword list as fixed and is too
narrow for a claim about "forget words" in general. The pigeonhole bootstrap (Owen 2007, *The
pigeonhole bootstrap*, Ann. Appl. Stat.) resamples every axis independently with replacement and
recomputes the mean of the observed cells; missing cells (NaN, e.g. keywords not assigned to a
chunk) are skipped. Each replicate is computed in closed form from per-axis multiplicity counts,
so 2,000 replicates over a 100 x 70 x 3 array take milliseconds.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from rna_theory.errors import RNAError


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean of the observed cells and a percentile bootstrap interval; ``n`` = observed cells."""

    mean: float
    low: float
    high: float
    n: int
    resampled: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n,
                "resampled": list(self.resampled)}


def crossed_bootstrap(values: Any, *, axes: Sequence[str] | None = None, n_boot: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``values`` (NaN = missing) with an interval resampling every axis independently.

    ``axes`` names the axes (for the record, e.g. ``("chunk", "keyword")``). An axis of length 1
    is not resampled (a single seed gives no between-seed spread: the interval then covers chunks
    and keywords only, and ``resampled`` says so).
    """
    v = np.asarray(values, dtype=np.float64)
    names = tuple(axes) if axes is not None else tuple(f"axis{i}" for i in range(v.ndim))
    if len(names) != v.ndim or v.ndim > 20:
        raise RNAError(f"{len(names)} axis names for a {v.ndim}-dimensional array", where="bootstrap",
                       fix="name every axis once")
    observed = ~np.isnan(v)
    n = int(observed.sum())
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, ())
    mean = float(v[observed].mean())
    rng = np.random.default_rng(seed)
    counts = [_counts(rng, size, n_boot) for size in v.shape]
    letters = string.ascii_letters[1:1 + v.ndim]
    spec = ",".join(f"a{c}" for c in letters) + f",{letters}->a"
    num = np.einsum(spec, *counts, np.where(observed, v, 0.0), optimize=True)
    den = np.einsum(spec, *counts, observed.astype(np.float64), optimize=True)
    stats = num[den > 0] / den[den > 0]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail]) if stats.size else (float("nan"),) * 2
    resampled = tuple(name for name, size in zip(names, v.shape) if size > 1)
    return Interval(mean, float(low), float(high), n, resampled)


def crossed_difference(a: Any, b: Any, *, axes: Sequence[str], independent: int = 1, n_boot: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``a`` minus mean of ``b`` (NaN = missing) with a crossed-bootstrap interval.

    The first ``independent`` axes (e.g. training seeds: two variants are separate runs) are
    resampled separately for ``a`` and ``b``; the remaining axes (chunks, keywords: the same items
    scored for both) are resampled jointly, so what the two share cancels in the difference.
    """
    va, vb = (np.asarray(x, dtype=np.float64) for x in (a, b))
    if va.ndim != len(axes) or vb.ndim != len(axes) or va.shape[independent:] != vb.shape[independent:]:
        raise RNAError(f"shapes {va.shape} and {vb.shape} do not share the crossed axes {tuple(axes)[independent:]}",
                       where="bootstrap", fix="score both variants on the same chunks and keywords")
    rng = np.random.default_rng(seed)
    shared = [_counts(rng, size, n_boot) for size in va.shape[independent:]]
    means = []
    for v in (va, vb):
        own = [_counts(rng, size, n_boot) for size in v.shape[:independent]]
        observed = ~np.isnan(v)
        if not observed.any():
            return Interval(float("nan"), float("nan"), float("nan"), 0, ())
        letters = string.ascii_letters[1:1 + v.ndim]
        spec = ",".join(f"a{c}" for c in letters) + f",{letters}->a"
        num = np.einsum(spec, *own, *shared, np.where(observed, v, 0.0), optimize=True)
        den = np.einsum(spec, *own, *shared, observed.astype(np.float64), optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append((float(v[observed].mean()), num / den))
    stats = means[0][1] - means[1][1]
    stats = stats[np.isfinite(stats)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail]) if stats.size else (float("nan"),) * 2
    n = int((~np.isnan(va)).sum() + (~np.isnan(vb)).sum())
    resampled = tuple(name for i, name in enumerate(axes) if max(va.shape[i], vb.shape[i]) > 1)
    return Interval(means[0][0] - means[1][0], float(low), float(high), n, resampled)


def _counts(rng: np.random.Generator, size: int, n_boot: int) -> np.ndarray:
    """Per-replicate multiplicities of ``size`` levels (all ones for a single level)."""
    if size > 1:
        return rng.multinomial(size, np.full(size, 1.0 / size), size=n_boot)
    return np.ones((n_boot, 1))
