"""Quantization and relearning attacks (`rna attack`): scores, intervals, the model untouched, and
every bad input refused before a model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_helpers import rna

from rna_theory.errors import RNAError
from rna_train.attacks import quantize, relearn
from rna_train.attacks.textnll import document_scores, interval, summary
from rna_train.eval.loading import load_for_eval

WORDS = ["the", "cell", "virus", "protein", "gene", "was", "in", "a", "city", "river", "king", "war", "music"]


def _texts(n: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (12,), generator=gen)) for _ in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attack")
    out = {}
    for name, seed in (("forget", 1), ("retain", 2), ("attack", 3)):
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(8, seed)))
    return out


def test_interval_is_a_bootstrap_of_the_mean() -> None:
    values = torch.arange(20, dtype=torch.float64).numpy()
    stat = interval(values)
    assert stat["mean"] == pytest.approx(9.5) and stat["n"] == 20
    assert stat["low"] < 9.5 < stat["high"] and stat["low"] > 6.0 and stat["high"] < 13.0


def test_quantization_keeps_the_model_and_moves_scores(llama_dir: Path, files: dict[str, Path]) -> None:
    model, tok = load_for_eval(str(llama_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = {"forget": [json.loads(x)["text"] for x in files["forget"].read_text().splitlines()]}
    result = quantize.run(model, tok, texts)
    assert set(result) == {"full", "int8", "int4"}
    full, int8, int4 = (result[k]["forget"]["nll"]["mean"] for k in ("full", "int8", "int4"))
    assert full == pytest.approx(float(document_scores(model, tok, texts["forget"])["nll"].mean()))
    assert abs(int8 - full) < abs(int4 - full) and abs(int4 - full) > 0  # 4 bits perturb more than 8
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # attacked a copy
    with pytest.raises(RNAError, match="cannot quantize to 3 bits"):
        quantize.quantized(model, 3)


def test_relearning_recovers_the_attack_texts(llama_dir: Path, files: dict[str, Path]) -> None:
    model, tok = load_for_eval(str(llama_dir))
    attack = [json.loads(x)["text"] for x in files["attack"].read_text().splitlines()]
    curves = relearn.run(model, tok, attack, {"forget": attack}, steps=[0, 4], lrs=[1e-2], batch_size=4)
    curve = curves["lr=0.01"]
    assert [p["step"] for p in curve] == [0, 4]
    assert curve[0]["forget"] == summary(model, tok, {"forget": attack})["forget"]  # step 0: the model itself
    assert curve[1]["forget"]["nll"]["mean"] < curve[0]["forget"]["nll"]["mean"] - 0.1
    lora_curve = relearn.run(model, tok, attack, {"forget": attack}, steps=[0, 4], lrs=[1e-2], lora_rank=2)
    assert lora_curve["lr=0.01"][1]["forget"]["nll"]["mean"] < curve[0]["forget"]["nll"]["mean"]


def test_cli_writes_results_with_the_base_model(llama_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    assert rna("attack", "quantize", "--model", str(llama_dir), "--base", str(llama_dir), "--forget",
               str(files["forget"]), "--retain", str(files["retain"]), "--bits", "8", "--out", str(out)) == 0
    result = json.loads((out / "attack.json").read_text())
    assert set(result["results"]) == {"full", "int8"}
    assert result["base_scores"] == result["results"]["full"]  # the same model scores the same
    table = capsys.readouterr().out
    assert "| int8 |" in table and "| base model |" in table
    out = tmp_path / "r"
    assert rna("attack", "relearn", "--model", str(llama_dir), "--attack-texts", str(files["attack"]), "--forget",
               str(files["forget"]), "--retain", str(files["retain"]), "--steps", "0", "2", "--lr", "1e-3",
               "--out", str(out)) == 0
    curve = json.loads((out / "attack.json").read_text())["results"]["lr=0.001"]
    assert [p["step"] for p in curve] == [0, 2] and set(curve[0]) == {"step", "forget", "retain"}


@pytest.mark.parametrize(("extra", "message"), [
    (["relearn"], "relearn needs the texts to attack with"),
    (["quantize", "--bits", "3"], r"cannot quantize to \[3\] bits"),
    (["quantize", "--backend", "bitsandbytes"], "not implemented yet"),
    (["quantize", "--forget", "/nonexistent.jsonl"], "file not found"),
    (["gcg"], "gcg needs the texts to attack with"),
    (["gcg", "--attack-texts", "{attack}", "--gcg", "steps=x"], "bad --gcg 'steps=x'"),
    (["gcg", "--attack-texts", "{attack}", "--gcg", "topk=0"], r"gcg\.topk must be a positive integer"),
])
def test_bad_inputs_fail_before_loading(extra: list[str], message: str, files: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from rna_train.eval import loading

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("a model was loaded"))
    argv = ["attack", extra[0], "--model", str(tmp_path), "--forget", str(files["forget"]), "--retain",
            str(files["retain"]), "--out", str(tmp_path / "o"), *(e.format(attack=files["attack"]) for e in extra[1:])]
    with pytest.raises(RNAError, match=message):
        rna(*argv)
    assert not (tmp_path / "o").exists()


def test_rna_eval_metrics_mode_runs_registered_metrics(llama_dir: Path, files: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`rna eval --metrics` computes registered metrics (what train.eval logs) and checks their inputs
    before a model loads."""
    out = tmp_path / "m"
    assert rna("eval", "--model", str(llama_dir), "--metrics", "forget_text,retain_text", "--forget",
               str(files["forget"]), "--retain", str(files["retain"]), "--max-length", "16", "--out", str(out)) == 0
    values = json.loads((out / "metrics.json").read_text())["metrics"]
    model, tok = load_for_eval(str(llama_dir))
    texts = [json.loads(x)["text"] for x in files["retain"].read_text().splitlines()]
    expected = document_scores(model, tok, texts, max_length=16)["nll"].mean()
    assert values["retain_text/nll"] == pytest.approx(float(expected))
    assert set(values) == {"forget_text/nll", "forget_text/top1", "retain_text/nll", "retain_text/top1"}
    from rna_train.eval import loading

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(RNAError, match="unknown metric 'nosuch'"):
        rna("eval", "--model", str(llama_dir), "--metrics", "nosuch", "--out", str(tmp_path / "x"))
    with pytest.raises(RNAError, match="needs forget") as info:
        rna("eval", "--model", str(llama_dir), "--metrics", "forget_text", "--out", str(tmp_path / "x"))
    assert info.value.where == "--forget" and not (tmp_path / "x").exists()


def test_report_shows_attack_folders(llama_dir: Path, llama2_dir: Path, files: dict[str, Path], tmp_path: Path) -> None:
    """`rna report` reads attack.json (quantize, gcg): one table per kind, every condition with its interval."""
    from rna_train.eval.report import write_report

    common = ["--model", str(llama2_dir), "--base", str(llama_dir), "--forget", str(files["forget"]), "--retain",
              str(files["retain"]), "--max-length", "16"]
    assert rna("attack", "quantize", *common, "--out", str(tmp_path / "q")) == 0
    budget = [a for kv in ("steps=1", "prompt_tokens=4", "target_tokens=4", "search_width=4") for a in ("--gcg", kv)]
    gcg_out = tmp_path / "g"
    assert rna("attack", "gcg", *common, "--attack-texts", str(files["attack"]), *budget, "--out", str(gcg_out)) == 0
    md, _ = write_report([tmp_path / "q", tmp_path / "g"], tmp_path / "r")
    page = md.read_text()
    assert "## Attacks: quantization and relearning" in page and "## Attacks: GCG" in page
    for condition in ("| full |", "| int8 |", "| int4 |", "| base model |", "| no string |", "| random string |",
                      "GCG minus no string (paired)", "GCG minus random (paired)", "base model, no string"):
        assert condition in page
