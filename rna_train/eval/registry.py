"""One registry of evaluation metrics: each is a small registered unit declaring its name, direction
(is higher better?), the inputs it needs and how it computes; evaluation during training assembles
from here (``train.eval.metrics``), so adding a metric is one module plus its test.

A metric's ``compute(model, tokenizer, inputs)`` returns ``{key: value}`` (several numbers may come
from one pass, e.g. NLL and top-1); the trainer logs them as ``eval/<metric>/<key>``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

from rna_theory.errors import RNAError

Compute = Callable[[Any, Any, Mapping[str, Any]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A registered metric: what it is called, which way is better, what it reads, how it computes."""

    name: str
    directions: Mapping[str, str]  # key -> "higher" | "lower" (is better)
    needs: tuple[str, ...]
    doc: str
    compute: Compute


_METRICS: dict[str, MetricSpec] = {}


def register(name: str, *, directions: Mapping[str, str], needs: tuple[str, ...] = ()) -> Callable[[Compute], Compute]:
    """Decorator registering ``compute`` as metric ``name`` (its docstring is the metric's description)."""
    bad = {k: v for k, v in directions.items() if v not in ("higher", "lower")}
    if bad:
        raise ValueError(f"metric {name}: direction must be 'higher' or 'lower', got {bad}")

    def wrap(compute: Compute) -> Compute:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        _METRICS[name] = MetricSpec(name, dict(directions), tuple(needs), (compute.__doc__ or "").strip(), compute)
        return compute

    return wrap


def _load_units() -> None:
    from rna_train.eval import units

    for info in pkgutil.iter_modules(units.__path__):
        importlib.import_module(f"{units.__name__}.{info.name}")


def available() -> dict[str, MetricSpec]:
    """Every registered metric by name."""
    _load_units()
    return dict(_METRICS)


def get(name: str) -> MetricSpec:
    """The metric ``name``; an unknown name is an RNAError listing the registered ones."""
    metrics = available()
    if name not in metrics:
        raise RNAError(f"unknown metric {name!r}", where="train.eval.metrics",
                       fix=f"use one of {', '.join(sorted(metrics))}")
    return metrics[name]


def check_inputs(names: list[str], inputs: Mapping[str, Any]) -> None:
    """Every chosen metric's inputs are given (checked at config load, before anything runs)."""
    from pathlib import Path

    for name in names:
        missing = [k for k in get(name).needs if not inputs.get(k)]
        if missing:
            raise RNAError(f"metric {name!r} needs {', '.join(missing)}", where=f"train.eval.{missing[0]}",
                           fix=f"set train.eval.{missing[0]} (a held-out text file)")
        for key in get(name).needs:
            if not Path(str(inputs[key])).exists():
                raise RNAError(f"file not found: {inputs[key]}", where=f"train.eval.{key}",
                               fix="point it at a held-out text file")
