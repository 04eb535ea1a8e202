"""Evaluation during training from the metric registry (`train.eval`): logged at the right steps,
equal to an evaluation of the saved model, in eval mode, and checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import train_helpers as helpers
import yaml

from rna_theory.errors import RNAError
from rna_train.attacks.textnll import document_scores
from rna_train.config import load_config
from rna_train.data import read_texts
from rna_train.eval import registry
from rna_train.trainer import train


def _config(tmp_path: Path, assets: dict[str, Path], **eval_opts: object):
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", steps=4, dropout=True,
                             eval={"every": 2, "forget": str(assets["bio"]), "retain": str(assets["retain"]),
                                   "max_texts": 5, **eval_opts})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "c.yaml")


def test_metrics_are_logged_every_n_steps_and_match_the_final_model(assets: dict[str, Path], tmp_path: Path) -> None:
    result = train(*_config(tmp_path, assets))
    keys = {"eval/forget_text/nll", "eval/forget_text/top1", "eval/retain_text/nll", "eval/retain_text/top1"}
    assert [bool(keys & set(r)) for r in result.metrics] == [False, True, False, True]
    assert all(keys <= set(r) for r in result.metrics if keys & set(r))
    assert result.model.training  # dropout run: the evaluation put the train mode back
    model = result.model.eval()
    texts = read_texts(assets["retain"])[:5]
    expected = document_scores(model, result.tokenizer, texts)["nll"].mean()
    assert result.metrics[-1]["eval/retain_text/nll"] == pytest.approx(float(expected), rel=1e-6)


def test_registry_lists_directions_and_refuses_bad_input(assets: dict[str, Path], tmp_path: Path) -> None:
    metrics = registry.available()
    assert metrics["forget_text"].directions == {"nll": "higher", "top1": "lower"}
    assert metrics["retain_text"].needs == ("retain",) and metrics["retain_text"].doc
    with pytest.raises(RNAError, match="unknown metric 'nosuch'") as info:
        _config(tmp_path, assets, metrics=["nosuch"])
    assert "forget_text" in info.value.fix
    with pytest.raises(RNAError, match="file not found") as info:
        _config(tmp_path, assets, retain=str(tmp_path / "missing.jsonl"))
    assert info.value.where == "train.eval.retain"
    with pytest.raises(RNAError, match="needs forget"):
        _config(tmp_path, assets, forget=None)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("forget_text", directions={"nll": "higher"})(lambda m, t, i: {})


def test_report_shows_the_evaluation_curves(assets: dict[str, Path], tmp_path: Path) -> None:
    import json

    from rna_train.eval.report import Run
    from rna_train.eval.units.training_curves import _eval_figure

    train(*_config(tmp_path, assets))
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert sum("eval/forget_text/nll" in r for r in rows) == 2  # the evaluations reach metrics.jsonl
    run = Run(tmp_path / "out", "rmu", {}, None, None, [], rows)
    assert _eval_figure([run])[:8] == b"\x89PNG\r\n\x1a\n"
    assert _eval_figure([Run(tmp_path, "x", {}, None, None, [], [{"step": 1, "loss": 1.0}])]) is None


def test_keyword_effect_and_probe_accuracy_during_training(assets: dict[str, Path], tmp_path: Path) -> None:
    """The keyword-effect and probe-accuracy units log per group / accuracy, equal to the same
    computation on the final model; bad keyword groups fail at load under train.eval.keywords."""
    import json

    from rna_train.eval.evaluate import evaluate
    from rna_train.eval.probes import load_probe

    texts = read_texts(assets["retain"])
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"text": " ".join(texts[i:] + texts[:i])}) + "\n" for i in range(6)))
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"question": f"Which word is number {i}?", "choices": ["cell", "river"],
                                         "answer": i % 2}) + "\n" for i in range(6)))
    cfg = _config(tmp_path, assets, retain=str(long), probe=str(probe), keywords=["forget=bio", "control=control"],
                  metrics=["keyword_effect", "probe_accuracy"], max_texts=4)
    result = train(*cfg)
    last = result.metrics[-1]
    assert {"eval/keyword_effect/effect_forget", "eval/keyword_effect/effect_control",
            "eval/probe_accuracy/accuracy"} <= set(last)
    model = result.model.eval()
    expected = registry.get("keyword_effect").compute(model, result.tokenizer, cfg[0].train.eval.__dict__)
    assert last["eval/keyword_effect/effect_forget"] == pytest.approx(expected["effect_forget"], rel=1e-6)
    ours, _ = evaluate(model, result.tokenizer, load_probe(probe)[:4], scorings=["loglik"])
    assert last["eval/probe_accuracy/accuracy"] == pytest.approx(ours["loglik"]["clean"]["overall"]["rate"])
    with pytest.raises(RNAError, match="NAME=LIST") as info:
        _config(tmp_path, assets, keywords=["nonsense"], metrics=["keyword_effect"])
    assert info.value.where == "train.eval.keywords"
    with pytest.raises(RNAError, match="needs probe"):
        _config(tmp_path, assets, metrics=["probe_accuracy"])
