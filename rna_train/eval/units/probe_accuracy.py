"""Unit ``probe_accuracy``: multiple-choice accuracy. As a training-time metric (``train.eval``), the
accuracy of the first max_texts questions of a probe file; as a report unit (``rna report`` on
``rna eval`` folders), clean vs. keyword-perturbed accuracy (figure and table), accuracy per subject,
the noise-scale ablation across runs and example perturbed questions."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rna_train.eval.document import Block, legend_outside, png
from rna_train.eval.registry import register, register_report
from rna_train.eval.report import Run, fmt, rate_cell

#: Example perturbed questions shown per run.
EXAMPLES = 3


def _accuracy_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Long table: run, condition (clean / perturbed: kind), rate and interval."""
    rows = []
    for run in runs:
        if run.eval:
            res = run.eval["results"][run.eval["primary"]]
            rows.append({"run": run.label, "condition": "clean", **_unpack(res["clean"]["overall"])})
            if "robustness" in res:
                kind = (run.eval.get("perturbation") or {}).get("keyword_kind", "keyword")
                rows.append({"run": run.label, "condition": f"perturbed: {kind}",
                             **_unpack(res["robustness"]["perturbed_accuracy"])})
        if run.audit:
            if not run.eval:
                clean = _unpack(run.audit["clean"]["overall"])
                rows.append({"run": run.label, "condition": "clean", **clean})
            seen = {r["condition"] for r in rows if r["run"] == run.label}
            for kind, entry in run.audit["keywords"].items():
                if f"perturbed: {kind}" not in seen:
                    rows.append({"run": run.label, "condition": f"perturbed: {kind}",
                                 **_unpack(entry["measured"]["perturbed_accuracy"])})
    return rows


def _unpack(r: dict[str, Any]) -> dict[str, Any]:
    return {"rate": r["rate"], "lo": r["ci"][0], "hi": r["ci"][1], "n": r["n"]}


def _eval_table(runs: Sequence[Run]) -> Block | None:
    rows = []
    for run in runs:
        if not run.eval:
            continue
        ev = run.eval
        for s in ev["scorings"]:
            res = ev["results"][s]
            rob = res.get("robustness") or {}
            pert = ev.get("perturbation") or {}
            model, probe = Path(str(ev.get("model", ""))).name, Path(str(ev.get("probe", ""))).name
            rows.append([run.label, model, probe, s,
                         rate_cell(res["clean"]["overall"]), rate_cell(rob.get("perturbed_accuracy")),
                         rate_cell(rob.get("unchanged")),
                         f"{pert.get('mode', '-')} {pert.get('keyword_kind', '')}".strip()])
    if not rows:
        return None
    return Block("table", headers=["run", "model", "probe", "scoring", "clean accuracy [95% CI]",
                                   "perturbed accuracy", "unchanged predictions", "perturbation"], rows=rows)


#: Runs per per-subject table (two columns each): a dozen runs become four tables that fit a window.
SUBJECT_RUNS = 3


def _subject_table(runs: Sequence[Run]) -> Block | None:
    """Per subject, each run's clean and perturbed accuracy (one table; see :func:`_subject_tables`)."""
    cols, data = [], {}
    for run in runs:
        if not run.eval:
            continue
        res = run.eval["results"][run.eval["primary"]]
        for cond in ("clean", "perturbed"):
            if cond in res:
                cols.append(f"{run.label}: {cond}")
                for subject, r in res[cond]["by_subject"].items():
                    data.setdefault(subject, {})[cols[-1]] = f"{fmt(r['rate'])} ({r['k']}/{r['n']})"
    if not cols:
        return None
    rows = [[s, *(data[s].get(c, "-") for c in cols)] for s in sorted(data)]
    return Block("table", headers=["subject", *cols], rows=rows)


def _subject_tables(runs: Sequence[Run]) -> list[Block]:
    """:func:`_subject_table` split into tables of at most :data:`SUBJECT_RUNS` runs each."""
    with_eval = [r for r in runs if r.eval]
    groups = [with_eval[i:i + SUBJECT_RUNS] for i in range(0, len(with_eval), SUBJECT_RUNS)]
    return [t for t in (_subject_table(g) for g in groups) if t is not None]


def _examples(runs: Sequence[Run]) -> Block | None:
    rows = []
    for run in runs:
        primary = (run.eval or {}).get("primary", "")
        perturbed = [r for r in run.records if "perturbation" in r]
        # questions whose prediction the keyword changed first: they show what the keyword does
        perturbed.sort(key=lambda r: (r["clean"].get(primary, {}).get("pred")
                                      == r["perturbed"].get(primary, {}).get("pred"), r["index"]))
        for rec in perturbed[:EXAMPLES]:
            pert = rec["perturbation"]
            rows.append([run.label, rec.get("subject", ""), rec.get("question", ""),
                         rec["perturbed_question"],
                         f"{pert.get('mode')} {pert.get('keyword')!s} @ word {pert.get('position')}",
                         fmt(rec["clean"].get(primary, {}).get("pred")
                              != rec["perturbed"].get(primary, {}).get("pred"))])
    if not rows:
        return None
    return Block("table", headers=["run", "subject", "clean question", "perturbed question", "perturbation",
                                   "prediction changed"], rows=rows)


def _accuracy_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = _accuracy_rows(runs)
    if not rows:
        return None
    labels = list(dict.fromkeys(r["run"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) * max(1, len(conds)) / 2), 3.6))
    sns.barplot(x=[r["run"] for r in rows], y=[r["rate"] for r in rows], hue=[r["condition"] for r in rows],
                order=labels, hue_order=conds, ax=ax, errorbar=None)
    width = 0.8 / len(conds)
    for r in rows:
        x = labels.index(r["run"]) - 0.4 + width * (conds.index(r["condition"]) + 0.5)
        ax.errorbar(x, r["rate"], yerr=[[r["rate"] - r["lo"]], [r["hi"] - r["rate"]]], fmt="none",
                    ecolor="black", capsize=3, lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_xlabel("")
    legend_outside(ax, 8)
    ax.tick_params(axis="x", labelrotation=15)
    return png(fig)


def _probe_name(run: Run) -> str:
    """The probe a run was scored on (file stem, with its subject filter), to keep probes apart."""
    source = run.eval or run.audit or {}
    name = Path(str(source.get("probe", "probe"))).stem
    return f"{name} [{source['subjects']}]" if source.get("subjects") else name


def _ablation_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Accuracy per (method, nu, condition and probe): accuracies of different probes (a forget probe and a
    retain probe) are separate series, never averaged together; the same series over seeds is."""
    rows = []
    for run in runs:
        if run.nu is None:
            continue
        method = run.info.get("method") or "model"
        probe = _probe_name(run)
        for r in _accuracy_rows([run]):
            rows.append({"method": method, "nu": run.nu, "metric": f"{r['condition']} ({probe})", "value": r["rate"]})
    return rows


def _ablation_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = _ablation_rows(runs)
    if len({r["nu"] for r in rows}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(x=[r["nu"] for r in rows], y=[r["value"] for r in rows], hue=[r["metric"] for r in rows],
                 style=[r["method"] for r in rows], marker="o", ax=ax)
    ax.set_xlabel("RNA noise std nu")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    legend_outside(ax, 7)
    return png(fig)


@functools.lru_cache(maxsize=4)
def _questions(path: str, _mtime_ns: int) -> tuple[Any, ...]:
    from rna_train.eval.probes import load_probe

    return tuple(load_probe(path))


@register("probe_accuracy", directions={"accuracy": "higher"}, needs=("probe",))
def probe_accuracy(model: Any, tokenizer: Any, inputs: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy (loglik scoring) on the first max_texts questions of train.eval.probe (higher is better
    on a retain probe; on a forget probe lower means more forgotten)."""
    from rna_train.eval.evaluate import evaluate

    path = str(inputs["probe"])
    questions = list(_questions(path, Path(path).stat().st_mtime_ns))[: int(inputs.get("max_texts", 32))]
    results, _ = evaluate(model, tokenizer, questions, scorings=["loglik"])
    return {"accuracy": float(results["loglik"]["clean"]["overall"]["rate"])}


def render(runs: Sequence[Run]) -> list[Block]:
    """The probe-accuracy sections present in ``runs``."""
    blocks: list[Block] = []
    table, fig = _eval_table(runs), _accuracy_figure(runs)
    if table or fig:
        blocks.append(Block("h2", "Accuracy, clean vs. perturbed"))
        if fig:
            blocks.append(Block("figure", "Accuracy on clean and keyword-perturbed questions per run "
                                "(primary scoring)", png=fig, name="accuracy"))
        if table:
            blocks.append(table)
    subjects = _subject_tables(runs)
    if subjects:
        blocks += [Block("h2", "Accuracy per subject"), *subjects]
    fig = _ablation_figure(runs)
    if fig:
        blocks += [Block("h2", "Noise-scale (nu) ablation"),
                   Block("figure", "Accuracy against the RNA noise std across runs", png=fig, name="nu_ablation")]
    examples = _examples(runs)
    if examples:
        blocks += [Block("h2", "Example perturbed questions"), examples]
    return blocks


register_report("probe_accuracy", render, order=10, directions={"accuracy": "higher", "unchanged": "higher"},
                doc="Multiple-choice accuracy of rna eval runs, clean and keyword-perturbed, with binomial intervals.")
