"""The table `rna attack` prints: per condition, forget and retain NLL and top-1 (GCG: target NLL and
top-1 of held-out forget texts) with intervals."""

from __future__ import annotations

from typing import Any

from rna_train.eval.document import interval_cell as _cell


def condition_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if result["attack"] == "quantize":
        return [(name, scores) for name, scores in result["results"].items()]
    return [(f"{lr}, step {point['step']}", point) for lr, curve in result["results"].items() for point in curve]


def format_gcg(result: dict[str, Any]) -> str:
    """Markdown for a GCG result: the string found, then target NLL / top-1 per condition."""
    res = result["results"]
    held = res["heldout"]
    lines = [f"gcg attack on {result['model']}: string {res['found']['string']!r} (optimisation loss "
             f"{res['found']['initial_loss']:.3f} -> {res['found']['best_loss']:.3f} on {res['n_train']} prompts); "
             f"held-out target NLL and top-1, mean [95 % bootstrap CI] over {res['n_heldout']} forget texts", "",
             "| condition | target NLL | target top-1 |", "|---|---|---|"]
    names = {"clean": "no string", "random": "random string", "attack": "GCG string",
             "attack_minus_clean": "GCG minus none (paired)", "attack_minus_random": "GCG minus random (paired)"}
    for key, name in names.items():
        lines.append(f"| {name} | {_cell(held['nll'][key])} | {_cell(held['top1'][key])} |")
    if res.get("base"):
        lines.append(f"| base model, no string | {_cell(res['base']['nll'])} | {_cell(res['base']['top1'])} |")
    lines.append(f"\n{result['seconds']:.1f} s")
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per condition (and the base model when scored), forget then retain columns."""
    if result["attack"] == "gcg":
        return format_gcg(result)
    lines = [f"{result['attack']} attack on {result['model']} (mean [95 % bootstrap CI] over "
             f"{result['texts']} texts x {result['max_length']} tokens)", "",
             "| condition | forget NLL | forget top-1 | retain NLL | retain top-1 |", "|---|---|---|---|---|"]
    rows = condition_rows(result)
    if result.get("base_scores"):
        rows.append(("base model", result["base_scores"]))
    for name, scores in rows:
        lines.append(f"| {name} | {_cell(scores['forget']['nll'])} | {_cell(scores['forget']['top1'])} | "
                     f"{_cell(scores['retain']['nll'])} | {_cell(scores['retain']['top1'])} |")
    lines.append(f"\n{result['seconds']:.1f} s")
    return "\n".join(lines)
