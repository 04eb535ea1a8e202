"""Hermetic end-to-end test of the miniature world: pretrain (tiny), unlearn +/- RNA with the real
trainer, evaluate and audit with the real CLI, aggregate, plot and report. Tiny sizes (< 1 min)."""

from __future__ import annotations

import json

import pytest

from rna_train.eval.report import write_report
from rna_train.studies.miniature.experiment import Schedule, Variant, markdown_table, plot_drops, run_grid
from rna_train.studies.miniature.pretrain import ModelSpec, PretrainSpec, cache_key, load_or_pretrain
from rna_train.studies.miniature.world import WorldConfig

WORLD = WorldConfig(n_entities=4, n_relations=2, pretrain_docs_per_topic=30, unlearn_docs_per_topic=8,
                    sentences_per_doc=3)
MODEL = ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
PRETRAIN = PretrainSpec(steps=30, batch_size=8, max_length=32)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    return load_or_pretrain(WORLD, MODEL, PRETRAIN, cache_dir=cache, progress=False), cache


def test_pretraining_is_cached_by_config_hash(base) -> None:
    model, cache = base
    assert model.path.parent.name == cache_key(WORLD, MODEL, PRETRAIN)
    assert (model.path / "config.json").is_file() and (model.path.parent / "DONE").is_file()
    again = load_or_pretrain(WORLD, MODEL, PRETRAIN, cache_dir=cache, progress=False)
    assert again.meta == model.meta  # loaded, not retrained
    assert cache_key(WORLD, MODEL, PretrainSpec(steps=31)) != model.path.parent.name


def test_grid_end_to_end(base, tmp_path) -> None:
    model, _ = base
    variants = [Variant("rmu"), Variant("rmu", "target", 0.5), Variant("npo", "input", 0.5)]
    results = run_grid(model, variants, [0, 1], tmp_path, schedule=Schedule(steps=4, batch_size=4, max_length=32))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["variant"] for r in summary["runs"]] == ["base", "base", "rmu", "rmu", "rmu-target-0.5",
                                                      "rmu-target-0.5", "npo-input-0.5", "npo-input-0.5"]
    for row in results.runs:
        for key in ("forget", "retain", "retain_trigger", "retain_control"):
            assert 0.0 <= row[key] <= 1.0
        assert row["drop_trigger"] == pytest.approx(row["retain"] - row["retain_trigger"])
        assert row["eta_trigger"] > 0 and row["n_questions"] == 3 * 4 * 2
    noisy = [r for r in results.runs if r["rna"] != "off"]
    assert all(r["predicted_first_order_trigger"] is not None for r in noisy)
    entry = results.summary()["rmu"]["drop_trigger"]
    assert entry["n"] == 2 and entry["lo"] <= entry["mean"] <= entry["hi"]
    cfg = (tmp_path / "rmu-target-0.5" / "seed-1" / "config.yaml").read_text()
    assert "mode: target" in cfg and "seed: 1" in cfg
    assert "| rmu-target-0.5 | 2 |" in markdown_table(results)
    assert plot_drops(results, tmp_path / "drops.png").stat().st_size > 1000
    md, html = write_report([tmp_path / "rmu" / "seed-0" / "eval-trigger", tmp_path / "rmu" / "seed-0" / "audit"],
                            tmp_path / "report")
    assert md.is_file() and html.is_file()


def test_setting4_registers_with_the_theory_registry() -> None:
    import rna_train.studies.miniature.theory  # noqa: F401  (registers on import)
    from rna_theory import claims

    assert 4 in claims._SETTINGS
    for cid in ("C1", "C6", "C7", "C8"):
        assert any(4 in settings for settings, _fn in claims._VERIFIERS[cid])
