"""Markdown + self-contained HTML reports from ``rna eval`` / ``rna audit`` run directories.

A run directory may hold ``eval.json`` + ``predictions.jsonl`` (``rna eval``), ``audit.json`` +
``latents-<kind>.npz`` (``rna audit``) and, when it is a training run, the trainer's
``config.yaml`` (method and RNA noise, used for labels and the nu ablation; also looked up in the
parent folder, for eval/audit folders inside a training run) and ``metrics.jsonl`` (loss curves).
Only eval or audit output is required.

The report is a list of blocks (headings, paragraphs, tables, figures; :mod:`rna_train.eval.document`)
rendered twice: Markdown with figures as PNG files beside it, and one HTML file with the figures
base64-embedded. Every string that comes from a run (labels, subjects, questions, keywords, paths) is
HTML-escaped in both. The sections come from the registry (report units in
:mod:`rna_train.eval.units`); this module reads run folders, labels them and assembles.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError
from rna_train.eval.document import Block, write_document
from rna_train.eval.runinfo import read_config, run_label, training_info

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """Everything the report reads from one run directory."""

    path: Path
    label: str
    info: dict[str, Any]
    eval: dict[str, Any] | None
    audit: dict[str, Any] | None
    records: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    outputs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # lmeval / attack / metrics

    @property
    def nu(self) -> float | None:
        """RNA noise std as configured (config.yaml, else the audit's --nu), None when unknown."""
        if self.info.get("nu") is not None:
            return float(self.info["nu"])
        for entry in (self.audit or {}).get("keywords", {}).values():
            noise = (entry.get("predicted") or {}).get("noise") or {}
            if noise.get("nu_given") is not None:
                return float(noise["nu_given"])
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RNAError(f"invalid JSON ({exc.msg}, line {exc.lineno})", where=str(path),
                       fix="rerun the command that wrote it") from None
    if not isinstance(data, dict):
        raise RNAError("expected a JSON object", where=str(path), fix="rerun the command that wrote it")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a line that is not JSON", path, lineno)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


#: Other command outputs a run directory may hold (``rna eval --lm-eval``, ``rna attack``,
#: ``rna eval --metrics``), read into :attr:`Run.outputs` by their stem.
OUTPUTS = ("lmeval.json", "attack.json", "metrics.json")


def load_run(path: str | Path) -> Run:
    """Read one run directory; it must hold eval.json, audit.json or one of :data:`OUTPUTS`."""
    path = Path(path)
    if not path.is_dir():
        raise RNAError("run directory does not exist", where=str(path),
                       fix="pass directories written by `rna eval --out`, `rna audit --out` or `rna attack --out`")
    ev, au = _read_json(path / "eval.json"), _read_json(path / "audit.json")
    outputs = {name.split(".")[0]: doc for name in OUTPUTS if (doc := _read_json(path / name)) is not None}
    if ev is None and au is None and not outputs:
        raise RNAError(f"no eval.json, audit.json or {', '.join(OUTPUTS)} in the run directory", where=str(path),
                       fix="run `rna eval --out DIR`, `rna audit --out DIR` or `rna attack ... --out DIR` first")
    # an eval/audit folder inside a training run takes the run's config.yaml and metrics.jsonl
    config = next((c for c in (path / "config.yaml", path.parent / "config.yaml") if c.is_file()), None)
    info = training_info(read_config(config)) if config else training_info({})
    label = (ev or {}).get("label") or run_label(info, path.name)
    metrics = next((m for m in (path / "metrics.jsonl", path.parent / "metrics.jsonl") if m.is_file()), None)
    return Run(path, str(label), info, ev, au, _read_jsonl(path / "predictions.jsonl"),
               _read_jsonl(metrics) if metrics else [], outputs)


# ----------------------------------------------------------------------------- numbers and tables

def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return f"{x:.{digits}g}" if (abs(x) < 1e-2 and x != 0) or abs(x) >= 1e4 else f"{x:.{digits}f}"


def rate_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "n/a"
    lo, hi = r["ci"]
    return f"{fmt(r['rate'])} [{fmt(lo)}, {fmt(hi)}] (n={r['n']})"


# ----------------------------------------------------------------------------- assembly

def build_blocks(runs: Sequence[Run], title: str) -> list[Block]:
    """The report's content for ``runs``: a header, then every registered report unit's blocks in
    order (``rna_train/eval/units``: probe accuracy, latent audit, training curves)."""
    import matplotlib

    from rna_train.eval.registry import reports

    matplotlib.use("Agg")
    blocks = [Block("h1", title),
              Block("p", "Runs: " + ", ".join(f"{r.label} ({r.path})" for r in runs) + ". Intervals are "
                    "binomial 95% intervals; 'unchanged' is the fraction of questions whose predicted "
                    "choice is the same with and without the keyword.")]
    for spec in reports():
        blocks += spec.report(runs)
    return blocks


def unique_labels(runs: Sequence[Run]) -> None:
    """Suffix labels shared by several runs with as many trailing path parts as make them unique
    (e.g. ``rmu [seed-0/eval-retain]`` vs. ``rmu [seed-1/eval-retain]``)."""
    base = [r.label for r in runs]
    for depth in range(1, max(len(r.path.resolve().parts) for r in runs) + 1):
        labels = [
            f"{b} [{'/'.join(r.path.resolve().parts[-depth:])}]" if base.count(b) > 1 else b
            for b, r in zip(base, runs, strict=True)
        ]
        if len(set(labels)) == len(labels):
            break
    for run, label in zip(runs, labels, strict=True):
        run.label = label


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 title: str = "RNA robustness report") -> tuple[Path, Path]:
    """Write ``report.md`` (+ ``figures/*.png``) and self-contained ``report.html`` to ``out_dir``."""
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise RNAError("no run directories given", where="report", fix="pass at least one run directory")
    unique_labels(runs)
    blocks = build_blocks(runs, title)
    return write_document(blocks, out_dir, title)
