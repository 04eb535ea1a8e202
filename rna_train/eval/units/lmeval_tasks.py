"""Report unit ``lmeval_tasks`` (``rna report`` on ``rna eval --lm-eval`` folders): accuracy and
normalised accuracy per lm-eval task and run, with the Wilson intervals of ``lmeval.json``."""

from __future__ import annotations

from collections.abc import Sequence

from rna_train.eval.document import Block
from rna_train.eval.registry import register_report
from rna_train.eval.report import Run, rate_cell


def render(runs: Sequence[Run]) -> list[Block]:
    """One table: run, task, accuracy, normalised accuracy."""
    rows = [[run.label, task, rate_cell(entry.get("acc")), rate_cell(entry.get("acc_norm"))]
            for run in runs for task, entry in (run.outputs.get("lmeval") or {}).get("results", {}).items()]
    if not rows:
        return []
    return [Block("h2", "lm-eval tasks"),
            Block("p", "Accuracy from lm-evaluation-harness (local tasks: mmlu, mmlu_sars with one word of each "
                  "question replaced by SARS-CoV-2, wmdp_*), Wilson 95% intervals counted from its per-document "
                  "records."),
            Block("table", headers=["run", "task", "accuracy", "normalised accuracy"], rows=rows)]


register_report("lmeval_tasks", render, order=12, directions={"acc": "higher"},
                doc="lm-eval task accuracy of rna eval --lm-eval runs, with Wilson intervals.")
