"""`rna robustness`: every section on the base and an unlearned model, one report with every section,
resume without recomputation (and the same numbers after a lost section), and bad inputs refused
before any model loads or any folder is created."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from eval_helpers import CHROMIUM, FLAGS, RNAError, rna

from rna_train.robustness.suite import collect

FORGET_WORDS = ["virus", "protein", "enzyme", "plasmid", "bacteria", "genome", "the", "was", "in", "a"]
RETAIN_WORDS = ["city", "river", "king", "music", "army", "poet", "bridge", "castle", "the", "was", "in", "a"]
BUDGET = ["mmlu.questions=4", "keyword_text.chunks=4", "keyword_text.n_keywords=3", "keyword_text.suffix_tokens=8",
          "keyword_text.head_tokens=4", "relearn.steps=[0,2]", "relearn.lrs=[1e-3]", "gcg.steps=2",
          "gcg.search_width=8", "gcg.n_tokens=3", "gcg.train_prompts=2", "max_texts=6", "max_length=16"]


def _write(path: Path, words: list[str], n: int, seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    rows = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (60,), generator=gen)) for _ in range(n)]
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, probe_file: Path) -> dict[str, Path]:
    """Forget / retain / attack texts and a stand-in MMLU asset in a private cache (offline lm-eval)."""
    tmp = tmp_path_factory.mktemp("robustness-inputs")
    mmlu = tmp / "cache" / "assets" / "mmlu"
    mmlu.mkdir(parents=True)
    for name in ("all", "forget", "retain"):
        shutil.copy(probe_file, mmlu / f"{name}.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNA_CACHE_DIR", str(tmp / "cache"))
        for key, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"),
                           ("HF_DATASETS_CACHE", str(tmp / "hf-cache"))):
            mp.setenv(key, value)
        yield {"forget": _write(tmp / "forget.jsonl", FORGET_WORDS, 8, 1),
               "retain": _write(tmp / "retain.jsonl", RETAIN_WORDS, 8, 2),
               "attack": _write(tmp / "attack.jsonl", FORGET_WORDS, 8, 3)}


@pytest.fixture(scope="module")
def suite(llama_dir: Path, llama2_dir: Path, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished suite folder: every section on the base and one unlearned model."""
    out = tmp_path_factory.mktemp("robustness") / "suite"
    assert rna(*_argv(llama2_dir, llama_dir, inputs, out)) == 0
    return out


def _argv(model: Path, base: Path, inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["robustness", str(model), *BUDGET, *extra, "--base", str(base), "--forget", str(inputs["forget"]),
            "--retain", str(inputs["retain"]), "--attack-texts", str(inputs["attack"]), "--label", "unlearned",
            "--out", str(out)]


def test_suite_runs_every_section_and_resumes(llama_dir: Path, llama2_dir: Path, inputs: dict[str, Path],
                                              suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "suite"
    shutil.copytree(suite, out)
    doc = json.loads((out / "robustness.json").read_text())
    sections = ["text_nll", "mmlu", "keyword_text", "quantize", "relearn", "gcg"]
    assert list(doc["sections"]) == sections and list(doc["models"]) == ["base", "unlearned"]
    assert all(set(doc["sections"][s]) == {"base", "unlearned"} for s in sections)
    assert all(doc["seconds"][s]["unlearned"] > 0 for s in sections)
    excess = doc["sections"]["keyword_text"]["unlearned"]["summary"]["excess"]["nll"]
    assert set(excess) == {"forget", "on_topic", "control"} and all(e["low"] <= e["high"] for e in excess.values())
    assert (out / "sections" / "keyword_text" / "base" / "keywords").is_dir()  # the mined groups are saved
    page = (out / "report.html").read_text()
    for title in ("Summary", "Wall time", "Held-out text", "MMLU through lm-eval", "Keyword fragility",
                  "Quantization attack", "Relearning attack", "GCG attack", "GCG minus no string (paired)",
                  "GCG minus random string (paired)"):
        assert title in page
    assert page.count("<figure") == len(sections) and "[" in page

    stamps = {p: p.stat().st_mtime_ns for p in (out / "sections").rglob("*.json")}
    gcg_file = out / "sections" / "gcg" / "unlearned.json"
    lost = json.loads(gcg_file.read_text())
    gcg_file.unlink()  # a run killed during the last section
    assert rna(*_argv(llama2_dir, llama_dir, inputs, out)) == 0
    again = json.loads(gcg_file.read_text())
    assert again["result"]["found"] == lost["result"]["found"]
    assert again["result"]["heldout"] == lost["result"]["heldout"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != gcg_file)
    assert rna("robustness", "--report-only", "--out", str(out)) == 0
    assert collect(out)["sections"]["gcg"]["unlearned"]["found"] == lost["result"]["found"]

    with pytest.raises(RNAError, match="other settings"):
        rna(*_argv(llama2_dir, llama_dir, inputs, out, "gcg.steps=3"))


def _bad_cases(inputs: dict[str, Path], tmp: Path) -> list[tuple[list[str], list[str], str]]:
    """(positional items, options, text of the error)."""
    empty = tmp / "empty.jsonl"
    empty.write_text(json.dumps({"text": "  "}) + "\n")
    texts = ["--forget", str(inputs["forget"]), "--retain", str(inputs["retain"])]
    base = ["--base", "{base}"]
    return [
        ([], base, "no model to evaluate"),
        (["{model}"], [], "no base model"),
        (["{model}", "sections=[text_nll,nosuch]"], base, "bad section list"),
        (["{model}", "sections=[relearn]"], base + texts, "needs attack_texts"),
        (["{model}", "sections=[text_nll]"], [*base, "--forget", str(tmp / "missing.jsonl"), "--retain",
                                              str(inputs["retain"])], "file not found"),
        (["{model}", "sections=[text_nll]"], [*base, "--forget", str(empty), "--retain", str(inputs["retain"])],
         "no non-empty texts"),
        (["{model}", "sections=[mmlu]", "mmlu.tasks=[nosuch_task]"], base, "unknown lm-eval task"),
        (["{model}", "sections=[mmlu]", "mmlu.tasks=[mmlu,mmlu]"], base, "bad task list"),
        (["{model}", "sections=[quantize]", "quantize.backend=bitsandbytes"], base + texts, "not implemented"),
        (["{model}", "sections=[gcg]", "gcg.steps=0"], [*base, "--forget", str(inputs["forget"]), "--attack-texts",
                                                         str(inputs["attack"])], "gcg.steps"),
        (["{model}", "{model2}", "sections=[text_nll]"], [*base, *texts, "--label", "a"], "labels"),
        (["{tmp}/no-model", "sections=[text_nll]"], base + texts, "folder not found"),
        (["{notok}", "sections=[text_nll]"], base + texts, "tokenizer"),
        (["{model}", "sections=[text_nll]"], [*base, *texts, "--device", "cuda:7"], "device"),
    ]


def test_bad_inputs_fail_before_anything_loads(llama_dir: Path, llama2_dir: Path, inputs: dict[str, Path],
                                               tmp_path: Path) -> None:
    notok = tmp_path / "notok"
    shutil.copytree(llama2_dir, notok)
    for f in notok.glob("tokenizer*"):
        f.unlink()
    names = {"model": llama2_dir, "model2": llama2_dir, "base": llama_dir, "tmp": tmp_path, "notok": notok}
    for items, options, expected in _bad_cases(inputs, tmp_path):
        out = tmp_path / "out"
        argv = [a.format(**names) for a in [*items, *options]]
        with pytest.raises(RNAError, match=expected):
            rna("robustness", *argv, "--out", str(out))
        assert not out.exists(), argv


def test_python_api_mirrors_the_cli(llama_dir: Path, llama2_dir: Path, inputs: dict[str, Path],
                                    tmp_path: Path) -> None:
    import rna as api

    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert rna(*_argv(llama2_dir, llama_dir, inputs, cli_out, "sections=[text_nll,quantize]")) == 0
    doc = api.robustness([llama2_dir], base=llama_dir, out=api_out, labels=["unlearned"],
                         forget=str(inputs["forget"]), retain=str(inputs["retain"]),
                         attack_texts=str(inputs["attack"]), sections=["text_nll", "quantize"], max_texts=6,
                         max_length=16)
    assert doc["sections"] == json.loads((cli_out / "robustness.json").read_text())["sections"]
    assert (api_out / "report.html").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(suite: Path, tmp_path: Path) -> None:
    import subprocess

    from PIL import Image

    page = (suite / "report.html").resolve()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "<h1>Robustness of unlearning</h1>" in dom
    assert dom.count("<h2>") == 8 and dom.count("<img ") == 6 and dom.count("<table>") == 2
    for title in ("Held-out text", "MMLU through lm-eval", "Keyword fragility", "Quantization attack",
                  "Relearning attack", "GCG attack"):
        assert f"<h2>{title}" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1280, 3000) and high - low > 100


def test_a_folder_from_another_version_is_refused_clearly(llama_dir: Path, llama2_dir: Path,
                                                          inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    (out / "suite.yaml").write_text("mmlu: {limit: 100}\n")  # a key this version no longer has
    with pytest.raises(RNAError, match="cannot be read by this version"):
        rna(*_argv(llama2_dir, llama_dir, inputs, out, "sections=[text_nll]"))
    assert sorted(p.name for p in out.iterdir()) == ["suite.yaml"]
