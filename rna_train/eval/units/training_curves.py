"""Report unit ``training_curves`` (``rna report`` on folders inside training runs): the trainer's loss
terms from ``metrics.jsonl`` and the registered metrics evaluated during training (``train.eval``)."""

from __future__ import annotations

from collections.abc import Sequence

from rna_train.eval.document import Block, legend_outside, png
from rna_train.eval.registry import register_report
from rna_train.eval.report import Run

#: metrics.jsonl keys plotted as losses (the trainer's total, forget and retain terms), besides
#: any key containing "loss".
LOSS_KEYS = ("loss", "forget", "retain")


def _metrics_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt

    series = []
    for run in runs:
        keys = sorted({k for row in run.metrics for k, v in row.items()
                       if (k in LOSS_KEYS or "loss" in k) and isinstance(v, (int, float)) and not isinstance(v, bool)})
        for key in keys:
            pts = [(row.get("step", i), row[key]) for i, row in enumerate(run.metrics) if key in row]
            series.append((f"{run.label}: {key}", pts))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, pts in series:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    legend_outside(ax, 6)
    return png(fig)


def _eval_figure(runs: Sequence[Run]) -> bytes | None:
    """One panel per ``eval/<metric>/<key>`` column of metrics.jsonl (train.eval), one line per run."""
    import matplotlib.pyplot as plt

    keys = sorted({k for run in runs for row in run.metrics for k in row if k.startswith("eval/")})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for run in runs:
            pts = [(row.get("step", i), row[key]) for i, row in enumerate(run.metrics) if key in row]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run.label)
        ax.set_title(key[len("eval/"):], fontsize=8)
        ax.set_xlabel("step")
    legend_outside(axes[0][-1], 6)
    fig.tight_layout()
    return png(fig)


def render(runs: Sequence[Run]) -> list[Block]:
    """Loss curves and evaluation-during-training curves, when the runs have them."""
    blocks: list[Block] = []
    fig = _metrics_figure(runs)
    if fig:
        blocks += [Block("h2", "Training losses"),
                   Block("figure", "Loss curves from metrics.jsonl", png=fig, name="training_losses")]
    curves = _eval_figure(runs)
    if curves:
        blocks += [Block("h2", "Evaluation during training"),
                   Block("figure", "Registered metrics (train.eval) after each evaluated step", png=curves,
                         name="eval_during_training")]
    return blocks


register_report("training_curves", render, order=30, directions={"loss": "lower"},
                doc="Training loss terms and in-training evaluation curves from metrics.jsonl.")
