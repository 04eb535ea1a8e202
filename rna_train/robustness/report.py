"""The robustness report: assembled from the registered sections (their summary rows, figures and
descriptions), one Markdown file with PNG figures and one self-contained HTML page.

Summary table: one line per section measure, one column per model (the base first), each cell
``mean [95 % interval]``; the arrow says which way is better for the defender. Then the wall time
of every section, then per section its description and figure (the section's own, or one panel
per measure with every model's interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rna_train.eval.document import Block, interval_cell, png, write_document

ARROWS = {"higher": "higher", "lower": "lower", None: ""}


def section_rows(spec: Any, results: Mapping[str, Any]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """``(label, better, {model: stat})`` for every measure any model of the section has."""
    table: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for name, result in results.items():
        for row in spec.section.rows(result):
            table.setdefault(row.label, (row.better, {}))[1][name] = row.stat
    return [(label, better, stats) for label, (better, stats) in table.items()]


def _generic_figure(rows: Sequence[tuple[str, str | None, dict[str, Any]]], names: Sequence[str]) -> bytes | None:
    """One panel per measure: every model's mean with its interval."""
    import matplotlib.pyplot as plt

    if not rows:
        return None
    cols = min(3, len(rows))
    n_rows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.6 * n_rows), squeeze=False)
    for ax, (label, _, stats) in zip(axes.flat, rows, strict=False):
        for x, name in enumerate(names):
            stat = stats.get(name)
            if not stat:
                continue
            mean = float(stat["mean"])
            low, high = float(stat.get("low", mean)), float(stat.get("high", mean))
            err = [[mean - low], [high - mean]] if math.isfinite(low) and math.isfinite(high) else None
            ax.errorbar([x], [mean], yerr=err, fmt="o", capsize=3, label=name)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=8)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    return png(fig)


def build_blocks(doc: Mapping[str, Any], title: str) -> list[Block]:
    """The report of a ``robustness.json`` document."""
    import matplotlib

    from rna_train.eval.registry import sections

    matplotlib.use("Agg")
    units = sections()
    names = list(doc["models"])
    cfg = doc["config"]
    blocks = [Block("h1", title),
              Block("p", "Models: " + "; ".join(f"{n}: {p}" for n, p in doc["models"].items()) +
                    f". Held-out forget texts: {cfg['forget']}; retain texts: {cfg['retain']}; attack texts: "
                    f"{cfg['attack_texts']}. Intervals are 95 %; each section says over what. Attacks are run on "
                    "the base model too, as the control: what the same attack does to a model that never forgot.")]
    summary, per_section = [], []
    for section in cfg["sections"]:
        results = {n: doc["sections"].get(section, {}).get(n) for n in names}
        results = {n: r for n, r in results.items() if r is not None}
        if not results:
            continue
        rows = section_rows(units[section], results)
        summary += [[section, label, ARROWS[better], *(interval_cell(stats.get(n)) for n in names)]
                    for label, better, stats in rows]
        spec = units[section]
        fig = spec.section.figure(results) if spec.section.figure else _generic_figure(rows, names)
        per_section += [Block("h2", spec.section.title or section), Block("p", spec.doc)]
        if fig:
            per_section.append(Block("figure", spec.section.title or section, png=fig, name=f"section_{section}"))
    blocks += [Block("h2", "Summary"),
               Block("table", headers=["section", "measure", "better", *names], rows=summary)]
    blocks += [Block("h2", "Wall time (seconds)"), _time_table(doc, names)]
    return blocks + per_section


def _time_table(doc: Mapping[str, Any], names: Sequence[str]) -> Block:
    rows = []
    for section in doc["config"]["sections"]:
        secs = doc["seconds"].get(section, {})
        rows.append([section, *(f"{secs[n]:.1f}" if n in secs else "-" for n in names)])
    totals = [sum(doc["seconds"].get(s, {}).get(n, 0.0) for s in doc["config"]["sections"]) for n in names]
    rows.append(["total", *(f"{t:.1f}" for t in totals)])
    return Block("table", headers=["section", *names], rows=rows)


def write_report(doc: Mapping[str, Any], out_dir: str | Path, title: str = "Robustness of unlearning") -> Path:
    """Write ``report.md`` (+ figures) and ``report.html`` for ``doc``; returns the HTML path."""
    return write_document(build_blocks(doc, title), out_dir, title)[1]

