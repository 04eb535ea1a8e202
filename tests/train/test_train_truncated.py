"""Layer-truncated RM training: only layers <= l are loaded, and the saved model is the full one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_train import trainer
from rna_train.config import load_config
from rna_train.models import load_model

LAYERS = 6


@pytest.fixture(scope="module")
def checkpoint(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer float64 Llama with an untied head, saved in several safetensors shards."""
    cfg = {**helpers.TINY["llama"], "num_hidden_layers": LAYERS, "tie_word_embeddings": False}
    model, tok = load_model(from_config=cfg, tokenizer=str(assets["tokenizer"]), seed=0, dtype="fp64")
    folder = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(folder, max_shard_size="40KB")
    tok.save_pretrained(folder)
    assert len(list(folder.glob("*.safetensors"))) > 2
    return folder


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in folder.glob("*.safetensors"):
        out.update(load_file(shard))
    return out


def _run(tmp: Path, assets: dict[str, Path], ckpt: Path, method: str, monkeypatch: pytest.MonkeyPatch,
         *, full: bool) -> trainer.TrainResult:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp / "out", method={"name": method},
                             rna={"mode": "target", "noise": 0.05}, steps=3, lr=1e-2, save_model=True)
    raw["model"] = {"name_or_path": str(ckpt), "dtype": "fp64"}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, options = load_config(tmp / "c.yaml")
    with monkeypatch.context() as m:
        if full:
            m.setattr(trainer, "can_truncate", lambda *_a: False)
        return trainer.train(cfg, options)


@pytest.mark.parametrize("method", ["rmu", "rsv"])
def test_truncated_run_saves_the_full_models_weights(method: str, assets: dict[str, Path], checkpoint: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = _run(tmp_path / "short", assets, checkpoint, method, monkeypatch, full=False)
    full = _run(tmp_path / "full", assets, checkpoint, method, monkeypatch, full=True)
    assert len(short.model.model.layers) == 3 and len(full.model.model.layers) == LAYERS
    assert short.model.lm_head.weight.numel() == 0
    for a, b in zip(short.metrics, full.metrics, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-10, abs=1e-12), key
    saved, expected = _tensors(short.output_dir / "model"), _tensors(full.output_dir / "model")
    assert saved.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(saved[name], value), name
    original = _tensors(checkpoint)
    assert any(not torch.equal(saved[n], original[n]) for n in short.trainable)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(short.output_dir / "model", dtype=torch.float64)
    assert len(reloaded.model.layers) == LAYERS
    params: dict[str, Any] = dict(reloaded.named_parameters())
    for name in short.trainable:
        assert torch.equal(params[name], saved[name])


def test_po_methods_load_every_layer(assets: dict[str, Path], checkpoint: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """NPO needs the output distribution: nothing is truncated."""
    raw_method = "npo"
    result = _run(tmp_path, assets, checkpoint, raw_method, monkeypatch, full=False)
    assert len(result.model.model.layers) == LAYERS
