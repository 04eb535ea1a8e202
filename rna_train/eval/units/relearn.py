"""Suite section ``relearn``: a few fine-tuning steps on held-out forget texts (``attack_texts``) at a
few learning rates, forget and retain texts re-scored after each step count. Run on the base model
too: how far the same fine-tuning moves a model that never forgot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rna_train.eval.registry import Row, Section, register_section


def _run(ctx: Any, name: str) -> dict[str, Any]:
    from rna_train.attacks import relearn

    model, tok = ctx.model(name)
    r = ctx.cfg.relearn
    corpora = {k: ctx.texts(k, ctx.cfg.max_texts) for k in ("forget", "retain")}
    return relearn.run(model, tok, ctx.texts("attack_texts"), corpora, steps=r.steps, lrs=r.lrs,
                       batch_size=r.batch_size, max_length=ctx.cfg.max_length, lora_rank=r.lora_rank,
                       seed=ctx.cfg.seed)


def _rows(result: Mapping[str, Any]) -> list[Row]:
    rows = []
    for lr, curve in result.items():
        last = curve[-1]
        rows += [Row(f"{lr}, step {last['step']}: forget NLL", last["forget"]["nll"], "higher"),
                 Row(f"{lr}, step {last['step']}: retain NLL", last["retain"]["nll"], "lower")]
    return rows


def _figure(results: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Forget NLL against relearning steps, one panel per learning rate, one line per model."""
    import matplotlib.pyplot as plt

    from rna_train.eval.document import legend_outside, png

    lrs = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(lrs), figsize=(4.2 * len(lrs), 3.2), squeeze=False)
    for ax, lr in zip(axes[0], lrs, strict=True):
        for name, result in results.items():
            curve = result[lr]
            steps = [p["step"] for p in curve]
            mean = [p["forget"]["nll"]["mean"] for p in curve]
            low = [p["forget"]["nll"]["low"] for p in curve]
            high = [p["forget"]["nll"]["high"] for p in curve]
            line = ax.plot(steps, mean, marker="o", ls="--" if name == "base" else "-", label=name)[0]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        ax.set(title=lr, xlabel="relearning steps", ylabel="held-out forget NLL")
    legend_outside(axes[0][-1], 8)
    return png(fig)


def _check(cfg: Any) -> None:
    from rna_theory.errors import RNAError

    r = cfg.relearn
    if not r.steps or any(s < 0 for s in r.steps) or not r.lrs or any(lr <= 0 for lr in r.lrs):
        raise RNAError(f"relearn.steps {r.steps} / relearn.lrs {r.lrs}", where="relearn",
                       fix="give step counts >= 0 and learning rates > 0")


register_section("relearn", Section(_run, _rows, figure=_figure, check=_check, title="Relearning attack"),
                 directions={"nll": "higher"}, needs=("attack_texts", "forget", "retain"),
                 doc="Full (or LoRA) fine-tuning on attack_texts for each step count at each learning rate; forget "
                     "and retain NLL re-scored, 95 % bootstrap intervals over texts. Unlearning that hid rather than "
                     "removed the knowledge falls back to the base model's forget NLL in a handful of steps; the "
                     "base model's own curve shows what the fine-tuning does by itself.")
