"""Report unit ``attack_tables`` (``rna report`` on ``rna attack`` folders): per attack and run, the
forget and retain NLL / top-1 of each condition (quantized weights, relearning steps) or, for GCG,
the held-out target NLL with the GCG string, a random string and none, with their intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rna_train.eval.document import Block
from rna_train.eval.document import interval_cell as _cell
from rna_train.eval.registry import register_report
from rna_train.eval.report import Run


def _text_rows(run: Run, attack: dict[str, Any]) -> list[list[str]]:
    from rna_train.attacks.report import condition_rows

    rows = [[run.label, attack["attack"], name, _cell(s["forget"]["nll"]), _cell(s["forget"]["top1"]),
             _cell(s["retain"]["nll"]), _cell(s["retain"]["top1"])] for name, s in condition_rows(attack)]
    if attack.get("base_scores"):
        s = attack["base_scores"]
        rows.append([run.label, attack["attack"], "base model", _cell(s["forget"]["nll"]), _cell(s["forget"]["top1"]),
                     _cell(s["retain"]["nll"]), _cell(s["retain"]["top1"])])
    return rows


def _gcg_rows(run: Run, attack: dict[str, Any]) -> list[list[str]]:
    res = attack["results"]
    held = res["heldout"]
    names = {"clean": "no string", "attack": f"GCG string {res['found']['string']!r}", "random": "random string",
             "attack_minus_clean": "GCG minus no string (paired)", "attack_minus_random": "GCG minus random (paired)"}
    rows = [[run.label, name, _cell(held["nll"][key]), _cell(held["top1"][key])] for key, name in names.items()]
    if res.get("base"):
        rows.append([run.label, "base model, no string", _cell(res["base"]["nll"]), _cell(res["base"]["top1"])])
    return rows


def render(runs: Sequence[Run]) -> list[Block]:
    """A table for the quantization / relearning attacks and one for GCG, when present."""
    attacks = [(run, run.outputs["attack"]) for run in runs if run.outputs.get("attack")]
    text = [row for run, a in attacks if a["attack"] != "gcg" for row in _text_rows(run, a)]
    gcg = [row for run, a in attacks if a["attack"] == "gcg" for row in _gcg_rows(run, a)]
    blocks: list[Block] = []
    if text:
        blocks += [Block("h2", "Attacks: quantization and relearning"),
                   Block("p", "Held-out forget and retain NLL / top-1 under each attack condition, 95% bootstrap "
                         "intervals over texts; the base model's row is the level a full recovery would reach."),
                   Block("table", headers=["run", "attack", "condition", "forget NLL", "forget top-1", "retain NLL",
                                           "retain top-1"], rows=text)]
    if gcg:
        blocks += [Block("h2", "Attacks: GCG"),
                   Block("p", "Held-out forget targets' NLL / top-1 with the optimised string, a random string of the "
                         "same length and none, 95% bootstrap intervals over texts (paired for the difference)."),
                   Block("table", headers=["run", "condition", "target NLL", "target top-1"], rows=gcg)]
    return blocks


register_report("attack_tables", render, order=25, directions={"nll": "higher"},
                doc="Quantization, relearning and GCG attack results of rna attack runs.")
