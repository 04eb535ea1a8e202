"""Optional lm-evaluation-harness integration (``pip install rna[lmeval]``).

* :func:`write_task` writes a probe (clean or perturbed) as an lm-eval task folder: a JSONL data
  file and a YAML task definition (``dataset_path: json`` with a local ``data_files`` path, so it
  runs offline) whose prompt is exactly the one :mod:`rna_train.eval.scoring` uses for ``loglik``:
  context ``Question: ...\\nAnswer:``, continuation ``" " + choice``. lm-eval's ``acc`` then equals
  our ``loglik`` accuracy and ``acc_norm`` normalises by answer length in bytes.
* :func:`run_tasks` runs such tasks (or any lm-eval task) on an in-memory model through
  ``HFLM(pretrained=model, tokenizer=tokenizer)``, e.g. right after unlearning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.eval.probes import Question


def _require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise RNAError("lm-evaluation-harness is not installed", where="lm_eval",
                       fix="pip install 'rna[lmeval]' (or pip install lm-eval)") from None


def task_config(name: str, data_file: Path) -> dict[str, Any]:
    """lm-eval YAML content for a native-format JSONL probe at ``data_file``."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_task(questions: Sequence[Question], task_dir: str | Path, name: str) -> Path:
    """Write ``<name>.jsonl`` and ``<name>.yaml`` to ``task_dir``; returns the YAML path.

    Questions and choices are stripped as the scorer strips them, so both pipelines see one text.
    """
    import json

    import yaml

    task_dir = Path(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / f"{name}.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for q in questions:
            row = {"question": q.question.strip(), "choices": [c.strip() for c in q.choices],
                   "answer": q.answer, "subject": q.subject}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    path = task_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task_config(name, data), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def run_tasks(model: Any, tokenizer: Any, tasks: Sequence[str], *, include_path: Sequence[str | Path] = (),
              batch_size: int = 8, limit: int | None = None) -> dict[str, Any]:
    """lm-eval output for an in-memory model: ``{"results": per task metrics, "samples": per task docs}``.

    ``include_path`` lists folders with task YAMLs (such as those from :func:`write_task`); when
    given, lm-eval's built-in task index is skipped (faster, offline). ``samples`` holds lm-eval's
    per-document records (each with its per-choice log-likelihoods in ``filtered_resps``).
    """
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=[str(p) for p in include_path] or None,
                          include_defaults=not include_path)
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=True,
                          bootstrap_iters=0)
    if out is None:
        raise RNAError("lm-eval returned no results", where="lm_eval", fix="run on the main process")
    return {"results": dict(out["results"]), "samples": dict(out.get("samples", {}))}
