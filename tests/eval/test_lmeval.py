"""lm-evaluation-harness adapter: exported perturbed-MMLU tasks run offline on an in-memory model."""

from __future__ import annotations

import pytest

from rna_train.eval.evaluate import evaluate
from rna_train.eval.keywords import builtin_keywords
from rna_train.eval.lmeval import task_config, write_task
from rna_train.eval.perturb import perturb_questions
from rna_train.eval.probes import load_probe


def test_task_yaml_is_written(probe_file, tmp_path):
    import yaml

    path = write_task(load_probe(probe_file), tmp_path / "t", "rna_mmlu_clean")
    config = yaml.safe_load(path.read_text())
    assert config == task_config("rna_mmlu_clean", tmp_path / "t" / "rna_mmlu_clean.jsonl")
    assert len((tmp_path / "t" / "rna_mmlu_clean.jsonl").read_text().splitlines()) == 12


def test_lm_eval_accuracy_equals_ours(llama_dir, probe_file, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'rna[lmeval]')")
    from rna_train.eval.lmeval import run_tasks
    from rna_train.eval.loading import load_for_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    questions = load_probe(probe_file)
    pairs = perturb_questions(questions, builtin_keywords("bio"), seed=3)
    write_task(questions, tmp_path / "tasks", "rna_mmlu_clean")
    write_task([p.perturbed for p in pairs], tmp_path / "tasks", "rna_mmlu_perturbed")
    model, tok = load_for_eval(str(llama_dir), "fp32", "cpu")
    out = run_tasks(model, tok, ["rna_mmlu_clean", "rna_mmlu_perturbed"], include_path=[tmp_path / "tasks"],
                    batch_size=4)
    ours, records = evaluate(model, tok, questions, scorings=["loglik"], pairs=pairs)
    results = out["results"]
    assert results["rna_mmlu_clean"]["acc,none"] == pytest.approx(ours["loglik"]["clean"]["overall"]["rate"])
    assert results["rna_mmlu_perturbed"]["acc,none"] == pytest.approx(
        ours["loglik"]["robustness"]["perturbed_accuracy"]["rate"])
    # not just the same accuracy: the same log-likelihood for every choice of every question
    for task, side in (("rna_mmlu_clean", "clean"), ("rna_mmlu_perturbed", "perturbed")):
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        assert len(samples) == len(records)
        for sample, rec in zip(samples, records, strict=True):
            theirs = [float(r[0]) for r in sample["filtered_resps"]]
            assert theirs == pytest.approx(rec[side]["loglik"]["scores"], abs=1e-4)


def test_rna_eval_exports_lmeval_tasks(llama_dir, probe_file, tmp_path):
    from eval_helpers import rna

    assert rna("eval", "--model", str(llama_dir), "--probe", str(probe_file), "--perturb", "substitute",
               "--keywords", "cyber", "--export-lmeval", str(tmp_path / "tasks")) == 0
    for name in ("rna_mmlu_clean", "rna_mmlu_perturbed"):
        assert (tmp_path / "tasks" / name / f"{name}.yaml").is_file()
        assert len((tmp_path / "tasks" / name / f"{name}.jsonl").read_text().splitlines()) == 12


def test_rna_eval_lm_eval_mode_runs_local_mmlu_tasks(llama_dir, probe_file, tmp_path, monkeypatch, capsys):
    """`rna eval --lm-eval mmlu,mmlu_sars` on a stand-in MMLU asset: both tasks scored offline in process,
    accuracy equal to our own scorer's, the SARS-CoV-2 substitution in every perturbed question."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'rna[lmeval]')")
    import json
    import shutil

    from eval_helpers import rna

    from rna_train.eval.lmevalrun import write_local_tasks
    from rna_train.eval.loading import load_for_eval
    from rna_train.studies import assets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    for name in ("all", "forget", "retain"):
        shutil.copy(probe_file, mmlu / f"{name}.jsonl")
    monkeypatch.setattr(assets, "require", lambda name, root=None: mmlu)
    written = write_local_tasks(["mmlu_sars"], mmlu, tmp_path / "w")
    rows = [json.loads(x) for x in (tmp_path / "w" / "rna_mmlu_sars" / "rna_mmlu_sars.jsonl").read_text().splitlines()]
    assert written == {"mmlu_sars": "rna_mmlu_sars"} and all("SARS-CoV-2" in r["question"] for r in rows)
    out = tmp_path / "run"
    assert rna("eval", "--model", str(llama_dir), "--lm-eval", "mmlu,mmlu_sars", "--out", str(out)) == 0
    record = json.loads((out / "lmeval.json").read_text())
    questions = load_probe(probe_file)
    model, tok = load_for_eval(str(llama_dir), "fp32", "cpu")
    ours, _ = evaluate(model, tok, questions, scorings=["loglik"])
    acc = record["results"]["mmlu"]["acc"]
    assert acc["n"] == len(questions) and acc["rate"] == pytest.approx(ours["loglik"]["clean"]["overall"]["rate"])
    assert record["results"]["mmlu_sars"]["acc"]["n"] == len(questions)
    assert "| mmlu_sars |" in capsys.readouterr().out
    from rna_train.eval.report import write_report

    md, _ = write_report([out], tmp_path / "report")  # rna report reads lmeval.json
    assert "## lm-eval tasks" in md.read_text() and "| mmlu_sars |" in md.read_text()


def test_lm_eval_mode_refuses_unknown_tasks_before_loading(llama_dir, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'rna[lmeval]')")
    from eval_helpers import rna

    from rna_theory.errors import RNAError
    from rna_train.eval import loading

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(RNAError, match=r"unknown lm-eval task\(s\) \['no_such_task'\]"):
        rna("eval", "--model", str(llama_dir), "--lm-eval", "no_such_task", "--lm-eval-include", str(tmp_path))


def test_wmdp_runs_from_a_local_folder_and_its_absence_is_named(llama_dir, probe_file, tmp_path, monkeypatch):
    """WMDP in the published layout (wmdp-bio/test-00000-of-00001.parquet: question, choices, answer) runs
    as the local task wmdp_bio, scored like our own scorer; a missing folder names the file to download."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'rna[lmeval]')")
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from eval_helpers import RNAError, rna

    from rna_train.eval.loading import load_for_eval

    for key, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_DATASETS_CACHE", str(tmp_path / "hf-cache")), ("RNA_CACHE_DIR", str(tmp_path / "c"))):
        monkeypatch.setenv(key, value)
    with pytest.raises(RNAError, match=r"wmdp-bio/test-00000-of-00001\.parquet"):
        rna("eval", "--model", str(llama_dir), "--lm-eval", "wmdp_bio", "--out", str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()
    rows = [{"question": r["question"], "choices": r["choices"], "answer": r["answer"]}
            for r in map(json.loads, probe_file.read_text().splitlines())]
    (tmp_path / "wmdp" / "wmdp-bio").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "wmdp" / "wmdp-bio" / "test-00000-of-00001.parquet")
    out = tmp_path / "run"
    assert rna("eval", "--model", str(llama_dir), "--lm-eval", "wmdp_bio", "--wmdp", str(tmp_path / "wmdp"),
               "--out", str(out)) == 0
    acc = json.loads((out / "lmeval.json").read_text())["results"]["wmdp_bio"]["acc"]
    model, tok = load_for_eval(str(llama_dir), "fp32", "cpu")
    ours, _ = evaluate(model, tok, load_probe(probe_file), scorings=["loglik"])
    assert acc["n"] == len(rows) and acc["rate"] == pytest.approx(ours["loglik"]["clean"]["overall"]["rate"])


def test_local_tasks_sample_across_the_file_or_take_the_first():
    """--sample draws questions at random (seeded, in file order); --limit keeps the first ones."""
    from rna_train.eval.lmevalrun import pick

    items = list(range(100))
    a = pick(items, sample=10, limit=None, seed=0)
    assert a == sorted(a) and len(set(a)) == 10 and a == pick(items, sample=10, limit=None, seed=0)
    assert a != pick(items, sample=10, limit=None, seed=1) and max(a) > 10
    assert pick(items, sample=None, limit=5, seed=0) == [0, 1, 2, 3, 4]
    assert pick(items, sample=500, limit=None, seed=0) == items
