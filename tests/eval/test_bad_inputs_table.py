"""Table-driven bad inputs across the CLI (issue 14, item 6): each is exit 2 with one line naming the
place, no traceback, and no output folder left behind. Model-free cases first; the others use the
tiny fixture model and probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rna_train.cli import main

#: (argv with {model} {probe} {tmp} placeholders, text the one error line must contain)
CASES: list[tuple[list[str], str]] = [
    (["tune", "--eta", "-1", "--dim", "4", "--margin", "1"], "eta"),
    (["tune", "--eta", "0.1", "--dim", "0", "--margin", "1"], "dim"),
    (["tune", "--eta", "0.1", "--dim", "4", "--margin", "1", "--target", "1.5"], "target"),
    (["tune", "--latents", "{tmp}/missing.npz"], "missing.npz"),
    (["unlearn", "--config", "{tmp}/missing.yaml"], "missing.yaml"),
    (["unlearn", "--config", "{tmp}/bad.yaml"], "YAML"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.lrr=1"], "did you mean 'lr'"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "rna.noise.nu=-1"], "rna.noise.nu"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "rna.mode=target",
      "rna.noise={{nu: auto, relative_to: robust}}"], "robust scale"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "data.max_length=5000"], "position window"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "rna.layer=3"], "rna.layer"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.warmup_steps=99"], "warmup_steps"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.lr_schedule=step"], "lr_schedule"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.tracker=comet"], "train.tracker"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "model.lora.rank=-1"], "model.lora.rank"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "model.lora.save=both"], "model.lora.save"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.eval.every=2",
      "train.eval.metrics=[nosuch]"], "unknown metric"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "train.eval.every=2"], "needs forget"),
    (["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", "data.forget.0.streaming=true",
      "output_dir={tmp}/o"], "data.forget.0.limit"),
    (["sweep", "--config", "experiments/configs/tiny_llama_rmu.yaml", "--out", "{tmp}/s", "train.lr=1e-3"],
     "nothing to sweep"),
    (["sweep", "--config", "experiments/configs/tiny_llama_rmu.yaml", "--out", "{tmp}/s", "seed=0,1",
      "rna.noise.nu=0.1,-1"], "rna.noise"),
    (["sweep", "--config", "experiments/configs/tiny_llama_rmu.yaml", "--out", "{tmp}/s", "output_dir=a,b"],
     "set by the sweep"),
    (["sweep", "--summary-only", "--out", "{tmp}/empty"], "no sweep.json"),
    (["sweep", "--config", "experiments/configs/tiny_llama_rmu.yaml", "--out", "{tmp}/s", "seed=0,1",
      "--shard", "1/1"], "is not I/N"),
    (["sweep", "--config", "experiments/configs/tiny_llama_rmu.yaml", "--out", "{tmp}/s", "seed=0,1",
      "--run-folder", "x-{{nu}}"], "not a swept key"),
    (["attack", "relearn", "--model", "{model}", "--forget", "{probe}", "--retain", "{probe}", "--out", "{tmp}/a",
      "--text-field", "question"], "--attack-texts"),
    (["attack", "quantize", "--model", "{model}", "--forget", "{probe}", "--retain", "{probe}", "--bits", "2",
      "--out", "{tmp}/a", "--text-field", "question"], "--bits"),
    (["attack", "quantize", "--model", "{tmp}/no/such", "--forget", "{probe}", "--retain", "{probe}",
      "--out", "{tmp}/a", "--text-field", "question"], "folder not found"),
    (["eval", "--model", "{model}"], "--probe"),
    (["eval", "--model", "{model}", "--probe", "{tmp}/missing.jsonl"], "missing.jsonl"),
    (["eval", "--model", "{model}", "--probe", "{probe}", "--keywords", "bio"], "--perturb"),
    (["eval", "--model", "{model}", "--probe", "{probe}", "--perturb", "insert", "--keywords", "{tmp}/none.txt"],
     "none.txt"),
    (["eval", "--model", "{tmp}/no/such/model", "--probe", "{probe}"], "folder not found"),
    (["eval", "--model", "{model}", "--probe", "{probe}", "--sample", "0"], "--sample"),
    (["eval", "--model", "{model}", "--probe", "{probe}", "--out", "{tmp}/afile"], "a file is in the way"),
    (["eval", "--model", "{model}", "--probe", "{probe}", "--device", "tpu9"], "--device"),
    (["audit", "--model", "{model}", "--probe", "{probe}", "--layer", "-1"], "layer"),
    (["audit", "--model", "{model}", "--probe", "{probe}", "--layer", "0", "--keywords", "bio", "bio"], "repeat"),
    (["report", "{tmp}/nothing-here", "--out", "{tmp}/r"], "nothing-here"),
    (["report", "{tmp}/empty", "--out", "{tmp}/r"], "no eval.json, audit.json"),
    (["report", "{tmp}/empty"], "--out"),
]


@pytest.mark.parametrize(("argv", "needle"), CASES, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input(argv: list[str], needle: str, llama_dir: Path, probe_file: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    filled = [a.format(model=llama_dir, probe=probe_file, tmp=tmp_path) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        status = main(filled)
    except SystemExit as exc:  # argparse's own usage errors exit 2 too
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(("rna", "usage"))]
    assert lines and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_the_table_covers_every_command() -> None:
    assert {argv[0] for argv, _ in CASES} >= {"tune", "unlearn", "eval", "audit", "report", "sweep", "attack"}
    assert json.dumps(CASES)  # plain data: the table doubles as documentation
