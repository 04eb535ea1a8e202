"""Model loading, trainable-parameter selection by name, and layer outputs via hooks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import train_helpers as helpers

from rna_theory.errors import RNAError
from rna_train import arch
from rna_train.models import edit_layer_output, layer_output, load_model, select_trainable


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest, assets: dict[str, Path]) -> tuple[str, torch.nn.Module, object]:
    model, tok = load_model(from_config=helpers.TINY[request.param], tokenizer=str(assets["tokenizer"]))
    model.eval()
    return request.param, model, tok


def _hook_counts(model: torch.nn.Module) -> list[int]:
    return [len(layer._forward_hooks) for layer in arch.decoder_layers(model)]


def test_default_patterns_by_architecture(tiny: tuple) -> None:
    name, model, _ = tiny
    chosen = select_trainable(model, [1, 2])
    expected = "mlp.c_proj" if name == "gpt2" else "mlp.down_proj"
    prefix = arch.layer_prefix(model)
    assert all(n.startswith(f"{prefix}.1.") or n.startswith(f"{prefix}.2.") for n in chosen)
    assert all(expected in n for n in chosen) and chosen
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(chosen)


def test_patterns_are_globs_on_relative_names(tiny: tuple) -> None:
    name, model, _ = tiny
    pattern = "attn.*" if name == "gpt2" else "self_attn.*_proj"
    chosen = select_trainable(model, [0], [pattern])
    assert chosen and all(".0." in n for n in chosen)
    with pytest.raises(RNAError) as info:
        select_trainable(model, [0], ["mlp.not_there"])
    assert info.value.where == "model.trainable.patterns"
    with pytest.raises(RNAError):
        select_trainable(model, [9])


def test_layer_output_matches_hidden_states(tiny: tuple) -> None:
    _, model, tok = tiny
    batch = tok(["virus protein spike cell", "the gene"], padding=True, return_tensors="pt")
    with torch.no_grad():
        model(**batch, output_hidden_states=True)  # transformers may install its own capture hooks
        before = _hook_counts(model)
        states = model(**batch, output_hidden_states=True).hidden_states
        for layer in range(arch.num_layers(model) - 1):  # the last one gets the final norm
            h = layer_output(model, layer, batch["input_ids"], batch["attention_mask"])
            assert torch.equal(h, states[layer + 1])
            full = layer_output(model, layer, batch["input_ids"], batch["attention_mask"], truncate=False)
            assert torch.equal(full, h)
    assert _hook_counts(model) == before


def test_edit_layer_output_changes_downstream_only(tiny: tuple) -> None:
    _, model, tok = tiny
    batch = tok(["virus protein spike cell"], return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    before = _hook_counts(model)
    with torch.no_grad():
        clean1, clean2 = layer_output(model, 1, ids, mask), layer_output(model, 2, ids, mask)
        with edit_layer_output(model, 1, lambda h: h + 1.0):
            moved1, moved2 = layer_output(model, 1, ids, mask), layer_output(model, 2, ids, mask)
    assert torch.allclose(moved1, clean1 + 1.0) and not torch.allclose(moved2, clean2)
    assert _hook_counts(model) == before


def test_load_from_folder_dtype_and_remote_code_warning(tmp_path: Path, assets: dict[str, Path],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    model, tok = load_model(from_config=helpers.TINY["gpt2"], tokenizer=str(assets["tokenizer"]), seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, _ = load_model(str(tmp_path / "m"), dtype="bf16")
    assert next(again.parameters()).dtype == torch.bfloat16
    same, _ = load_model(from_config=helpers.TINY["gpt2"], tokenizer=str(assets["tokenizer"]), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    with caplog.at_level(logging.WARNING, logger="rna_train.models"):
        load_model(str(tmp_path / "m"), trust_remote_code=True)
    assert "trust_remote_code" in caplog.text
    with pytest.raises(RNAError, match="folder not found"):
        load_model(str(tmp_path / "missing"), tokenizer=str(assets["tokenizer"]))


def test_gguf_file_is_passed_through(monkeypatch: pytest.MonkeyPatch, assets: dict[str, Path]) -> None:
    """GGUF weights load through transformers' own gguf_file argument (no gguf package here)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen: dict[str, object] = {}
    model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]))

    def fake_model(path: str, **kwargs: object) -> torch.nn.Module:
        seen["model"] = kwargs.get("gguf_file")
        return model

    def fake_tok(path: str, **kwargs: object) -> object:
        seen["tokenizer"] = kwargs.get("gguf_file")
        return tok

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake_tok)
    from rna_train import models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)  # "some/folder" stands for a Hub id
    load_model("some/folder", gguf_file="w.Q4_1.gguf")
    assert seen == {"model": "w.Q4_1.gguf", "tokenizer": "w.Q4_1.gguf"}


BASE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "max_position_embeddings": 64}
FAMILIES = {
    "mistral": {**BASE, "num_key_value_heads": 2},
    "qwen2": {**BASE, "num_key_value_heads": 2},
    "gemma": {**BASE, "num_key_value_heads": 2, "head_dim": 8},
    "gemma2": {**BASE, "num_key_value_heads": 2, "head_dim": 8},
    "gemma3_text": {**BASE, "num_key_value_heads": 2, "head_dim": 8},
    "gpt_neox": {**BASE},
    "phi": {**BASE},
    "phi3": {**BASE, "num_key_value_heads": 4},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_supported_family(family: str, assets: dict[str, Path]) -> None:
    """Layers resolve, the default trainable projection exists, and layer outputs are exact."""
    model, tok = load_model(from_config={"model_type": family, **FAMILIES[family]},
                            tokenizer=str(assets["tokenizer"]))
    model.eval()
    chosen = select_trainable(model, [0, 1])
    assert len({n.rsplit(".", 1)[0] for n in chosen}) == 2  # one projection per layer
    batch = tok(["virus protein spike", "gene"], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
        h = layer_output(model, 1, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(h, states[2])
