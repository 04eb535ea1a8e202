"""Suite section ``mmlu``: lm-eval multiple-choice tasks on the loaded model, clean and with the paper's
perturbation (``mmlu_sars``: one word of each question replaced by "SARS-CoV-2"), from the local MMLU
asset (and WMDP from a local folder: ``wmdp_bio``...), so the numbers come from the standard harness
and run offline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rna_train.eval.registry import Row, Section, register_section

#: Accuracy of guessing among four choices: a model near it cannot show a drop.
CHANCE = 0.25


def _prepare(cfg: Any, workdir: str, sample: int) -> tuple[dict[str, str], list[Any]]:
    from pathlib import Path

    from rna_train.eval.lmevalrun import prepare_tasks

    section = cfg.mmlu
    return prepare_tasks(section.tasks, Path(workdir), seed=cfg.seed, sample=sample,
                         wmdp_dir=Path(section.wmdp) if section.wmdp else None, where="mmlu.tasks")


def _run(ctx: Any, name: str) -> dict[str, Any]:
    """Accuracy (and normalised accuracy) per task with Wilson intervals."""
    import tempfile

    from rna_train.eval.lmevalrun import run_lmeval

    cfg = ctx.cfg.mmlu
    model, tok = ctx.model(name)
    with tempfile.TemporaryDirectory() as tmp:
        local, include = _prepare(ctx.cfg, tmp, cfg.questions)
        results = run_lmeval(model, tok, cfg.tasks, include_path=include, local=local, batch_size=cfg.batch_size,
                             limit=None if local else cfg.questions)
    return {"tasks": results, "chance": CHANCE}


def _check(cfg: Any) -> None:
    """lm-eval installed, the MMLU asset / WMDP folder present for local tasks, every task name known."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _prepare(cfg, tmp, 1)


def _rows(result: Mapping[str, Any]) -> list[Row]:
    rows = []
    for task, entry in result["tasks"].items():
        r = entry.get("acc")
        if r:
            rows.append(Row(f"{task} accuracy (chance {result['chance']:.2f})",
                            {"mean": r["rate"], "low": r["ci"][0], "high": r["ci"][1], "n": r["n"]}, "higher"))
    return rows


register_section("mmlu", Section(_run, _rows, check=_check,
                                 title="MMLU through lm-eval: clean and SARS-CoV-2-perturbed"),
                 directions={"acc": "higher"},
                 doc="lm-eval accuracy on `mmlu.questions` questions of each task, drawn at random across "
                     "subjects (local tasks from the MMLU asset; mmlu_sars replaces one word of each question by "
                     "SARS-CoV-2, the paper's perturbation), Wilson 95 % intervals. A drop from mmlu to mmlu_sars "
                     "larger for the unlearned model than for the base is the paper's fragility; a model at chance "
                     "(0.25) cannot show it (SmolLM2-135M is there: read the keyword_text section instead).")
