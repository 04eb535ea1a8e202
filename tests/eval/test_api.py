"""The Python API (`import rna`): the CLI's pipelines with Python values, and its safety rails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rna
from rna_theory.errors import RNAError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "experiments" / "configs" / "tiny_llama_rmu.yaml"


def test_unlearn_takes_a_dict_and_overwrites_only_run_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load(TINY.read_text())
    out = tmp_path / "run"
    first = rna.unlearn(raw, output_dir=str(out), **{"train.steps": 2, "rna.noise.nu": 0.01})
    assert len(first.metrics) == 2 and first.config.rna.noise.nu == 0.01 and first.tokenizer is not None
    with pytest.raises(RNAError, match="already finished"):
        rna.unlearn(raw, output_dir=str(out), train__steps=2)
    again = rna.unlearn(raw, output_dir=str(out), train__steps=3, overwrite=True)
    assert len(again.metrics) == 3
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(RNAError, match="not a run's output"):
        rna.unlearn(raw, output_dir=str(precious), train__steps=1, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "x"
    with pytest.raises(RNAError, match="both model and tokenizer"):
        rna.unlearn(raw, model=first.model)


def test_audit_and_tune_match_the_cli(llama_dir: Path, probe_file: Path, tmp_path: Path) -> None:
    from rna_train.cli import main

    api = rna.audit(str(llama_dir), probe=probe_file, layer=1, keywords=["bio", "control"], nu=0.05,
                    out=tmp_path / "api", max_rows=50)
    assert main(["audit", "--model", str(llama_dir), "--probe", str(probe_file), "--layer", "1", "--keywords",
                 "bio", "control", "--nu", "0.05", "--max-rows", "50", "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "audit.json").read_text())
    for kind in ("bio", "control"):
        assert api["keywords"][kind]["estimators"] == cli["keywords"][kind]["estimators"]
        assert api["keywords"][kind]["predicted"]["at_nu"] == cli["keywords"][kind]["predicted"]["at_nu"]
    from_file = rna.tune(tmp_path / "api" / "latents.npz", target=0.5)
    from_arrays = rna.tune(margins=np.full(20, 2.0), eta=0.1, dim=8, target=0.5)
    assert from_file.target == 0.5 and from_arrays.recommended_nu is not None
