"""The study summary's matched-forgetting interpolation and `rna theory check --settings 5` rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rna_theory.errors import RNAError


def _cells(value: float, n_items: int = 3, n_words: int = 2):
    """Cells whose every (item, keyword) NLL effect is ``value`` (one group, ``forget``)."""
    from rna_train.eval.fragility import Cells, TextItem

    k = 4
    items = [TextItem(i, 20, (1, 2), (3, 4, 5, 6)) for i in range(n_items)]
    clean = np.zeros((n_items, k))
    pert = np.full((n_items, n_words, k), -value)
    return Cells(["a", "b"][:n_words], ["forget"] * n_words, items, clean, np.zeros((n_items, k)), pert,
                 np.zeros((n_items, n_words, k)), np.full((n_items, n_words), np.nan), np.full(n_items, np.nan))


def _point(step: int, forget_nll: float, value: float):
    from rna_train.studies.textstudy_summary import Point

    p = Point("v", 0, step, {"forget_heldout": {"nll": forget_nll}}, Path("unused"))
    p._cells = _cells(value)
    return p


def test_at_forget_level_averages_every_crossing():
    """Forget NLL 4, 6, 5, 7 at steps 1-4 with excess 0, 1, 2, 3: level 5.5 is crossed three times
    (interpolated 0.75, 1.5, 2.25): the run's value is their mean; a level never reached gives None."""
    from rna_train.studies.textstudy_summary import at_forget_level

    base = _cells(0.0)
    run = [_point(s, f, v) for s, f, v in ((3, 5.0, 2.0), (1, 4.0, 0.0), (4, 7.0, 3.0), (2, 6.0, 1.0))]
    got = at_forget_level(run, 5.5, base, "forget", head=2)
    np.testing.assert_allclose(got, np.full((3, 2), 1.5))
    np.testing.assert_allclose(at_forget_level(run, 4.5, base, "forget", head=2), np.full((3, 2), 0.25))
    assert at_forget_level(run, 7.5, base, "forget", head=2) is None


def _summary() -> dict:
    iv = lambda m, lo, hi: {"mean": m, "low": lo, "high": hi, "n": 10, "resampled": ["seed", "chunk", "keyword"]}  # noqa: E731
    return {
        "pooled": [{"variant": "rmu", "step": 50, "seeds": [0, 1, 2], "forget_nll": 4.6,
                    "excess": {"forget": iv(0.0, -0.02, 0.02), "control": iv(0.0, -0.01, 0.01)}},
                   {"variant": "rmu", "step": 150, "seeds": [0, 1, 2], "forget_nll": 7.0,
                    "excess": {"forget": iv(0.4, 0.1, 0.8), "control": iv(0.03, 0.01, 0.05)}}],
        "matched": [{"variant": "rmu-target-0.25", "reference": "rmu", "group": "forget", "forget_nll": 6.0,
                     "seeds": [3, 3], "difference": iv(-0.2, -0.3, -0.1)},
                    {"variant": "rmu-target-0.25", "reference": "rmu", "group": "forget", "forget_nll": 7.0,
                     "seeds": [1, 3], "difference": iv(0.1, -0.1, 0.3)}]}


def test_setting5_rows_read_the_study(tmp_path, monkeypatch):
    """Setting 5 turns the committed summaries into C7/C8 rows with sign verdicts; a missing file is
    a clear error naming the variable to set."""
    from rna_theory.claims import run_checks
    from rna_theory.errors import RNAError

    summary, theory = tmp_path / "s.json", tmp_path / "t.json"
    summary.write_text(json.dumps(_summary()))
    theory.write_text(json.dumps([{"step": 150, "eta": 9.0, "dim": 576, "median_margin": 0.4, "rows": [
        {"variant": "rmu-target-0.25", "certified": 0.0, "first_order": 0.52, "measured": 0.60},
        {"variant": "rmu-target-1", "certified": 0.0, "first_order": 0.61, "measured": None}]}]))
    monkeypatch.setenv("RNA_STUDY_SUMMARY", str(summary))
    monkeypatch.setenv("RNA_STUDY_THEORY", str(theory))
    rows = {r.quantity: r for r in run_checks(["C7", "C8"], settings=[5])}
    forget = rows["(i) rmu step 150: forget-word excess NLL over base (nats/token)"]
    assert forget.verdict == "holds" and forget.measured == 0.4
    assert rows["(i) rmu step 150: control-word excess NLL over base (nats/token)"].verdict == "violated"
    matched = rows["(ii) rmu-target-0.25 - rmu: forget excess at forget NLL 6.0"]
    assert matched.verdict == "holds" and matched.ci == (-0.3, -0.1)
    tuner = [r for r in rows.values() if r.claim == "C7"]
    assert len(tuner) == 1 and tuner[0].verdict == "violated" and tuner[0].predicted == 0.52
    monkeypatch.setenv("RNA_STUDY_SUMMARY", str(tmp_path / "missing.json"))
    with pytest.raises(RNAError, match="RNA_STUDY_SUMMARY"):
        run_checks(["C8"], settings=[5])


def test_a_methods_trainable_patterns_reach_the_run_config(tmp_path):
    """``methods.<m>.trainable`` sets ``model.trainable.patterns`` of that method's runs only."""
    import yaml

    from rna_train.studies.textstudy import StudyData, load_plan, run_config

    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({
        "methods": {"rmu": {"method": {"name": "rmu", "layer": 2}, "trainable": ["mlp.down_proj", "post_*"]},
                    "npo": {"method": {"name": "npo", "layer": 2}}},
        "variants": {"a": {"method": "rmu"}, "b": {"method": "npo", "rna": "target", "nu": 0.1},
                     "c": {"method": "npo", "rna": "target", "nu": 0.8, "scale": "robust"}}}))
    plan = load_plan(plan_file)
    data = StudyData(tmp_path / "data")
    a = run_config(plan, "a", 0, tmp_path / "model", data)
    b = run_config(plan, "b", 1, tmp_path / "model", data)
    assert a["model"]["trainable"]["patterns"] == ["mlp.down_proj", "post_*"]
    assert b["model"]["trainable"]["patterns"] is None
    assert b["rna"]["noise"] == {"nu": 0.1, "relative_to": "rms"} and b["seed"] == 1
    assert run_config(plan, "c", 0, tmp_path / "model", data)["rna"]["noise"] == {"nu": 0.8, "relative_to": "robust"}
    bad = yaml.safe_load(plan_file.read_text())
    bad["variants"]["c"]["scale"] = "mad"
    plan_file.write_text(yaml.safe_dump(bad))
    with pytest.raises(RNAError, match="scale must be rms or robust"):
        load_plan(plan_file)


def test_override_keys_may_name_a_variant_with_dots(tmp_path):
    """``variants.npo-target-robust-0.8.seeds=[0,1]`` reaches the variant whose name holds a dot."""
    import yaml

    from rna_train.studies.textstudy import load_plan

    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({
        "methods": {"npo": {"method": {"name": "npo", "layer": 2}}},
        "variants": {"npo-robust-0.8": {"method": "npo", "rna": "target", "nu": 0.8, "scale": "robust"}}}))
    plan = load_plan(plan_file, ["variants.npo-robust-0.8.seeds=[0,1]"])
    assert plan.variant("npo-robust-0.8").seeds == [0, 1]



def _study_module():
    """``experiments/smollm2/study.py`` as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "experiments" / "smollm2" / "study.py"
    spec = importlib.util.spec_from_file_location("smollm2_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_trains_through_the_sweep_in_shards_and_skips_finished_work(fake_cache, tmp_path, monkeypatch):
    """``study.py run --shard i/2``: each shard trains its (variant, seed) jobs as points of the variant's
    sweep, in ``<out>/<variant>/seed-<N>/`` (snapshots, evaluations), with the variant's config.yaml,
    sweep.json and training summary over seeds beside them; an interrupted training resumes; a rerun
    trains and evaluates nothing; a study run's snapshot equals the trainer's on the run config."""
    import torch
    import yaml
    from safetensors.torch import load_file

    from rna_train import trainer
    from rna_train.checkpoint import snapshot_path
    from rna_train.config import load_config
    from rna_train.studies import textstudy

    out = tmp_path / "study"
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({
        "out": str(out), "model": "smollm2",
        "eval": {"n_chunks": 6, "keywords_per_chunk": 3, "suffix_tokens": 4, "head_tokens": 2, "layer": 1,
                 "n_boot": 200},
        "methods": {"rmu": {"method": {"name": "rmu", "layer": 1, "steering_coef": 20.0}, "eval_steps": [2, 4]}},
        "variants": {"a": {"method": "rmu", "seeds": [0, 1]}, "b": {"method": "rmu", "rna": "target", "nu": 0.1}}}))
    study = _study_module()
    trained: list[tuple[str, bool]] = []
    evaluated: list[str] = []
    train, evaluate, save = trainer.train, textstudy.evaluate_model, trainer._save_periodic

    def counted_train(cfg, options, resume=False):
        trained.append((str(Path(cfg.output_dir).relative_to(out)), resume))
        return train(cfg, options, resume=resume)

    def counted_evaluate(*args, **kwargs):
        evaluated.append(str(args[4].relative_to(out)))
        return evaluate(*args, **kwargs)

    def stop_after_first_checkpoint(run, step):
        save(run, step)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", counted_train)
    monkeypatch.setattr(textstudy, "evaluate_model", counted_evaluate)

    def run(shard: str) -> None:
        monkeypatch.setattr("sys.argv", ["study.py", "run", "--plan", str(plan_file), "--shard", shard])
        assert study.main() == 0

    run("0/2")  # jobs (a, 0), (a, 1), (b, 0): shard 0 runs the first and the third
    runs = ["a/seed-0/eval-step-2.json", "a/seed-0/eval-step-4.json", "b/seed-0/eval-step-2.json",
            "b/seed-0/eval-step-4.json"]
    assert trained == [("a/seed-0", False), ("b/seed-0", False)] and evaluated == ["base/eval.json", *runs]
    summary = json.loads((out / "a" / "summary.json").read_text())
    assert [(r["point"], r["status"]) for r in summary["runs"]] == [({"seed": "0"}, "done"), ({"seed": "1"}, "missing")]
    monkeypatch.setattr(trainer, "_save_periodic", stop_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run("1/2")
    monkeypatch.setattr(trainer, "_save_periodic", save)
    run("1/2")
    assert trained[2:] == [("a/seed-1", False), ("a/seed-1", True)]
    assert evaluated[5:] == ["a/seed-1/eval-step-2.json", "a/seed-1/eval-step-4.json"]
    run("0/2")
    run("1/2")
    assert len(trained) == 4 and len(evaluated) == 7  # nothing redone

    variant = out / "a"
    assert sorted(p.name for p in variant.iterdir()) == ["config.yaml", "seed-0", "seed-1", "summary.json",
                                                         "summary.md", "summary.png", "sweep.json"]
    assert "seed" not in yaml.safe_load((variant / "config.yaml").read_text())
    record = json.loads((variant / "sweep.json").read_text())
    assert record["axes"] == {"seed": ["0", "1"]} and record["run_folder"] == "seed-{seed}"
    summary = json.loads((variant / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    assert summary["groups"][0]["retain"]["n"] == 2 and summary["last"] == 10
    assert "| loss | forget | retain |" in (variant / "summary.md").read_text()
    for seed in (0, 1):
        run_dir = variant / f"seed-{seed}"
        assert (run_dir / "DONE").is_file() and (run_dir / "train_seconds.json").is_file()
        assert snapshot_path(run_dir / "snapshots", 4).is_file() and (run_dir / "eval-step-4.cells.npz").is_file()

    plan = textstudy.load_plan(plan_file)
    direct = textstudy.run_config(plan, "a", 0, textstudy.model_path(plan), textstudy.StudyData(out / "data"))
    train(*load_config({**direct, "output_dir": str(tmp_path / "direct")}))
    for step in (2, 4):
        got = load_file(str(snapshot_path(variant / "seed-0" / "snapshots", step)))
        want = load_file(str(snapshot_path(tmp_path / "direct" / "snapshots", step)))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
