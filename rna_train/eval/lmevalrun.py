"""`rna eval --lm-eval TASKS`: lm-evaluation-harness tasks on the loaded model, in process.

Task names are lm-eval's own (answered from its registry, which needs the task's dataset on this
machine or the Hub), folders given with ``--lm-eval-include``, or the local names of
:data:`LOCAL_TASKS`, written here from a probe file (offline): ``mmlu`` is the whole MMLU test set
of ``rna assets fetch mmlu`` with our prompt, ``mmlu_sars`` the same questions with one word of
each question replaced by "SARS-CoV-2" (the paper's perturbed-MMLU protocol: substitution at a
seeded random word). Every name is checked against the task index before the model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError

#: Local task name -> (probe file name in the MMLU asset folder, substituted keyword or None).
LOCAL_TASKS: dict[str, tuple[str, str | None]] = {"mmlu": ("all.jsonl", None), "mmlu_sars": ("all.jsonl", "SARS-CoV-2"),
                                                   "mmlu_forget": ("forget.jsonl", None),
                                                   "mmlu_retain": ("retain.jsonl", None)}


def write_local_tasks(names: Sequence[str], mmlu_dir: Path, workdir: Path, *, seed: int = 0,
                      sample: int | None = None) -> dict[str, str]:
    """Write the local tasks among ``names`` into ``workdir``; returns ``{name: lm-eval task name}``."""
    from rna_train.eval.lmeval import write_task
    from rna_train.eval.perturb import perturb_questions
    from rna_train.eval.probes import load_probe

    out = {}
    for name in names:
        if name not in LOCAL_TASKS:
            continue
        file, keyword = LOCAL_TASKS[name]
        questions = load_probe(mmlu_dir / file)[:sample]
        if keyword is not None:
            questions = [p.perturbed for p in perturb_questions(questions, [keyword], mode="substitute", seed=seed)]
        task = f"rna_{name}"
        write_task(questions, workdir / task, task)
        out[name] = task
    return out


def check_tasks(tasks: Sequence[str], include_path: Sequence[str | Path]) -> None:
    """Every task name is known to lm-eval (its registry plus ``include_path``), before any model loads."""
    from rna_train.eval.lmeval import _require_lm_eval

    _require_lm_eval()
    from lm_eval.tasks import TaskManager

    known = set(TaskManager(include_path=[str(p) for p in include_path] or None).all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise RNAError(f"unknown lm-eval task(s) {unknown}", where="--lm-eval",
                       fix=f"use lm-eval task names (lm_eval --tasks list), a folder with --lm-eval-include, or "
                           f"a local task: {', '.join(LOCAL_TASKS)}")


def summarize(output: dict[str, Any], names: dict[str, str], *, confidence: float = 0.95) -> dict[str, Any]:
    """Per requested name: accuracy (and normalised accuracy) as ``{k, n, rate, ci}`` with a Wilson
    interval, counted from lm-eval's per-document records (the format of ``rna eval``'s own scores)."""
    from rna_train.eval.metrics import rate

    results = {}
    for name, task in names.items():
        samples = output["samples"].get(task)
        if not samples:
            raise RNAError(f"lm-eval returned no scored documents for {task!r}", where="--lm-eval",
                           fix="check the task's data")
        entry: dict[str, Any] = {"task": task}
        for metric in ("acc", "acc_norm"):
            values = [float(s[metric]) for s in samples if metric in s]
            if values:
                entry[metric] = rate(round(sum(values)), len(values), confidence=confidence)
        results[name] = entry
    return results


def format_table(results: dict[str, Any]) -> str:
    """Markdown: accuracy and normalised accuracy per task with their 95 % intervals."""
    def cell(r: dict[str, Any] | None) -> str:
        return "-" if r is None else f"{r['rate']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] ({r['k']}/{r['n']})"

    lines = ["| task | acc | acc_norm |", "|---|---|---|"]
    lines += [f"| {name} | {cell(r.get('acc'))} | {cell(r.get('acc_norm'))} |" for name, r in results.items()]
    return "\n".join(lines)


def run_lmeval(model: Any, tokenizer: Any, names: Sequence[str], *, include_path: Sequence[str | Path],
               local: dict[str, str], batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """Run the tasks (local ones under their written names) and summarise them."""
    from rna_train.eval.lmeval import run_tasks

    tasks = {name: local.get(name, name) for name in names}
    output = run_tasks(model, tokenizer, list(tasks.values()), include_path=include_path, batch_size=batch_size,
                       limit=limit)
    return summarize(output, tasks)
