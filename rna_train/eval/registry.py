"""One registry of evaluation metrics and attacks: each is a small registered unit declaring its
name, direction (is higher better?), the inputs it needs, how it computes and how it renders.
Evaluation during training (``train.eval.metrics``) and the robustness suite (``rna robustness``,
its sections and report) assemble from here, so adding a metric or an attack is one module in
:mod:`rna_train.eval.units` plus its test.

A unit has a ``compute(model, tokenizer, inputs) -> {key: value}`` (a scalar metric the trainer logs
as ``eval/<metric>/<key>``), a :class:`Section` (a robustness-suite section: run on one model,
summary rows, a figure), or both; or a ``report(runs) -> blocks`` (the sections ``rna report``
draws from ``rna eval`` / ``rna audit`` / training folders, placed by ``order``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rna_theory.errors import RNAError

Compute = Callable[[Any, Any, Mapping[str, Any]], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the robustness summary: a measure, its statistic ``{mean, low, high}`` and which
    way is better for the defender (``higher``/``lower``; None when neither, e.g. a raw score)."""

    label: str
    stat: Mapping[str, float]
    better: str | None = None


@dataclasses.dataclass(frozen=True)
class Section:
    """A robustness-suite section.

    ``run(ctx, name)`` scores the model called ``name`` (``"base"`` for the base model) and returns a
    JSON-able result; ``rows(result)`` gives its summary lines; ``figure(results)`` draws every model's
    results (``{name: result}``) as PNG bytes or None; ``on_base``: the base model is run too (for
    an attack, the same attack on the base model: the control); ``check(cfg)`` validates the suite
    config's settings and requirements of this section before anything loads.
    """

    run: Callable[[Any, str], dict[str, Any]]
    rows: Callable[[Mapping[str, Any]], list[Row]]
    figure: Callable[[Mapping[str, Mapping[str, Any]]], bytes | None] | None = None
    on_base: bool = True
    title: str = ""
    check: Callable[[Any], None] | None = None


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A registered unit: what it is called, which way is better, what it reads, how it computes
    (``compute``: a scalar metric of one model) and how it runs in the suite (``section``)."""

    name: str
    directions: Mapping[str, str]  # key -> "higher" | "lower" (is better)
    needs: tuple[str, ...]
    doc: str
    compute: Compute | None = None
    section: Section | None = None
    report: Callable[[Sequence[Any]], list[Any]] | None = None
    order: int = 0


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


def register_section(name: str, section: Section, *, directions: Mapping[str, str],
                     needs: tuple[str, ...] = (), doc: str = "") -> None:
    """Register ``section`` as the suite section ``name`` (or attach it to the metric ``name``)."""
    bad = {k: v for k, v in directions.items() if v not in ("higher", "lower")}
    if bad:
        raise ValueError(f"section {name}: direction must be 'higher' or 'lower', got {bad}")
    if name in _METRICS:
        if _METRICS[name].section is not None:
            raise ValueError(f"section {name!r} is registered twice")
        _METRICS[name] = dataclasses.replace(_METRICS[name], section=section)
        return
    _METRICS[name] = MetricSpec(name, dict(directions), tuple(needs), doc.strip(), None, section)


def register_report(name: str, render: Callable[[Sequence[Any]], list[Any]], *, order: int,
                    directions: Mapping[str, str], doc: str = "") -> None:
    """Register ``render(runs) -> blocks`` as the ``rna report`` unit ``name`` (placed by ``order``), or
    attach it to the metric ``name`` registered before."""
    if name in _METRICS:
        if _METRICS[name].report is not None:
            raise ValueError(f"report unit {name!r} is registered twice")
        _METRICS[name] = dataclasses.replace(_METRICS[name], report=render, order=order)
        return
    _METRICS[name] = MetricSpec(name, dict(directions), (), doc.strip(), report=render, order=order)


def reports() -> list[MetricSpec]:
    """Every unit that renders ``rna report`` sections, in report order."""
    return sorted((m for m in available().values() if m.report is not None), key=lambda m: (m.order, m.name))


def _load_units() -> None:
    from rna_train.eval import units

    for info in pkgutil.iter_modules(units.__path__):
        importlib.import_module(f"{units.__name__}.{info.name}")


def available() -> dict[str, MetricSpec]:
    """Every registered metric by name."""
    _load_units()
    return dict(_METRICS)


def sections() -> dict[str, MetricSpec]:
    """Every unit with a robustness-suite section, by name, in registration order."""
    return {name: spec for name, spec in available().items() if spec.section is not None}


def get(name: str) -> MetricSpec:
    """The training-time metric ``name``; an unknown name (or a suite-only section) is an RNAError
    listing the metrics."""
    metrics = {n: m for n, m in available().items() if m.compute is not None}
    if name not in metrics:
        raise RNAError(f"unknown metric {name!r}", where="train.eval.metrics",
                       fix=f"use one of {', '.join(sorted(metrics))}")
    return metrics[name]


def check_inputs(names: list[str], inputs: Mapping[str, Any]) -> None:
    """Every chosen metric's inputs are given and readable (checked at config load, before anything runs):
    files exist; keyword groups (``keywords``) resolve to non-empty lists."""
    from pathlib import Path

    for name in names:
        missing = [k for k in get(name).needs if not inputs.get(k)]
        if missing:
            raise RNAError(f"metric {name!r} needs {', '.join(missing)}", where=f"train.eval.{missing[0]}",
                           fix=f"set train.eval.{missing[0]} ({_NEED_HELP.get(missing[0], 'a held-out text file')})")
        for key in get(name).needs:
            if key == "keywords":
                from rna_train.eval.mining import load_groups

                try:
                    load_groups(list(inputs[key]))
                except RNAError as exc:
                    raise RNAError(exc.what, where="train.eval.keywords", fix=exc.fix) from None
            elif not Path(str(inputs[key])).exists():
                raise RNAError(f"file not found: {inputs[key]}", where=f"train.eval.{key}",
                               fix="point it at an existing file")


_NEED_HELP = {"keywords": "keyword groups such as [forget=bio, control=control]",
              "probe": "a JSONL multiple-choice probe"}
