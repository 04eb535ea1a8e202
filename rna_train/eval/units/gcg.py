"""Suite section ``gcg``: one adversarial token string optimised (GCG) between the prompts and targets
of a few attack texts, transferred to held-out forget texts (see :mod:`rna_train.attacks.gcg`). Run on
the base model too: what the same search does to a model that never forgot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rna_train.eval.registry import Row, Section, register_section


def _run(ctx: Any, name: str) -> dict[str, Any]:
    from rna_train.attacks import gcg

    model, tok = ctx.model(name)
    spec = ctx.cfg.gcg.spec(ctx.cfg.seed)
    return gcg.run(model, tok, ctx.texts("attack_texts"), ctx.texts("forget"), spec)


def _rows(result: Mapping[str, Any]) -> list[Row]:
    held = result["heldout"]["nll"]
    return [Row("held-out target NLL, no string", held["clean"], "higher"),
            Row("held-out target NLL, GCG string", held["attack"], "higher"),
            Row("held-out target NLL, random string", held["random"], None),
            Row("GCG minus no string (paired)", held["attack_minus_clean"], "higher"),
            Row("GCG minus random string (paired)", held["attack_minus_random"], "higher")]


def _figure(results: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """The optimisation loss (mean target NLL of the attack prompts) after each step, per model."""
    import matplotlib.pyplot as plt

    from rna_train.eval.document import legend_outside, png

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, result in results.items():
        found = result["found"]
        ax.plot(range(len(found["losses"]) + 1), [found["initial_loss"], *found["losses"]],
                ls="--" if name == "base" else "-", label=name)
    ax.set(xlabel="GCG step", ylabel="attack prompts' target NLL")
    legend_outside(ax, 8)
    return png(fig)


def _check(cfg: Any) -> None:
    cfg.gcg.spec(cfg.seed)  # checks the budget


register_section("gcg", Section(_run, _rows, figure=_figure, check=_check, title="GCG attack"),
                 directions={"nll": "higher"}, needs=("attack_texts", "forget"),
                 doc="Target NLL of held-out forget texts (prompt_tokens of context, then target_tokens scored) "
                     "with no string, the GCG string and a random string of the same length inserted between "
                     "context and target; 95 % bootstrap intervals over texts (paired for the differences). The "
                     "attack recovers text when the GCG string lowers the target NLL below the no-string level "
                     "(GCG minus no string < 0), toward the base model's; below the random string's alone only "
                     "shows it disturbs less than random tokens.")
