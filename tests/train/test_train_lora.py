"""LoRA runs: every method x RNA mode trains adapters only, the reference stays the base model, and
the saved merged model / adapter reload with plain transformers / peft to the trained model."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_theory.errors import RNAError
from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.trainer import DONE, train

METHODS = ["rmu", "adaptive_rmu", "rsv", "npo", "dpo", "simnpo", "ga", "graddiff"]


@pytest.fixture(scope="module")
def models(assets: dict[str, Path]) -> dict[str, tuple[torch.nn.Module, object]]:
    return {arch: load_model(from_config=helpers.TINY[arch], tokenizer=str(assets["tokenizer"]), seed=0)
            for arch in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def corpora(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A forget corpus of exactly one batch, so each step's forget loss is on the same texts."""
    return {**helpers.write_corpora(tmp_path_factory.mktemp("small"), n_forget=4, n_retain=8),
            "tokenizer": assets["tokenizer"]}


def _config(tmp_path: Path, assets: dict[str, Path], *, method: dict, rna: dict | None = None,
            arch: str = "llama", lora: dict | None = None, model: dict | None = None, **train_opts: object):
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", arch=arch, method=method,
                             rna=rna or {"mode": "off"}, **{"steps": 4, "lr": 2e-2, **train_opts})
    raw["model"]["lora"] = {"rank": 4, **(lora or {})}
    if model is not None:
        raw["model"] = {**model, "lora": raw["model"]["lora"]}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _logits(model: torch.nn.Module, tok: object) -> torch.Tensor:
    ids = tok("the virus was in the city", return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits


@pytest.mark.parametrize(("method", "mode"), [(m, mode) for m in METHODS for mode in ("off", "target", "input")
                                              if m != "ga" or mode == "off"])  # ga has no retain step to perturb
def test_every_method_trains_adapters_only(method: str, mode: str, corpora: dict[str, Path], models: dict,
                                           tmp_path: Path) -> None:
    base, tok = models["llama"]
    model = copy.deepcopy(base)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    po = method in ("npo", "dpo", "simnpo")
    retain = {} if method == "ga" else {"retain_loss": "kl" if po else "rm", "alpha": 1.0}
    cfg, options = _config(tmp_path, corpora, method={"name": method, **retain}, rna={"mode": mode, "noise": 0.05})
    result = train(cfg, options, model_and_tokenizer=(model, tok))
    rows = result.metrics
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float)), rows
    assert rows[-1]["forget"] < rows[0]["forget"], "the forget objective did not improve"
    # merged at the end: a plain model whose only changes are the adapted matrices
    assert not any("lora_" in n for n, _ in result.model.named_parameters())
    assert result.trainable == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)]
    state = result.model.state_dict()
    assert state.keys() == original.keys()
    for name, value in state.items():
        assert torch.equal(value, original[name]) != (name in result.trainable), name
    if "retain" in rows[0] and mode == "off":
        # the reference is the base model: zero at step 1 (adapters start at B = 0), positive once
        # the adapters moved (a reference that followed the live weights would stay at 0)
        assert rows[0]["retain"] == pytest.approx(0.0, abs=1e-6)
        assert rows[-1]["retain"] > 1e-8


def test_gpt2_conv1d_and_rank_shapes(corpora: dict[str, Path], models: dict, tmp_path: Path) -> None:
    base, tok = models["gpt2"]
    cfg, options = _config(tmp_path, corpora, arch="gpt2", method={"name": "npo", "retain_loss": "kl"},
                           lora={"rank": 2, "save": "adapter"}, save_model=False)
    result = train(cfg, options, model_and_tokenizer=(copy.deepcopy(base), tok))
    names = result.trainable
    assert names == sorted(f"transformer.h.{i}.mlp.c_proj.lora_{ab}.default.weight" for i in (0, 1, 2) for ab in "AB")
    params = dict(result.model.named_parameters())
    n_embd, inner = 32, 4 * 32  # c_proj maps 4 x n_embd -> n_embd
    assert params[names[0]].shape == (2, inner) and params[names[1]].shape == (n_embd, 2)
    assert set(load_file(tmp_path / "out" / "trainable.safetensors")) == set(names)


def test_merged_model_reloads_with_plain_transformers(corpora: dict[str, Path], models: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base, tok = models["llama"]
    cfg, options = _config(tmp_path, corpora, method={"name": "rmu"}, save_model=True, snapshot_steps=[2])
    result = train(cfg, options, model_and_tokenizer=(copy.deepcopy(base), tok))
    out = tmp_path / "out"
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    torch.testing.assert_close(_logits(reloaded, tok), _logits(result.model.eval(), tok), rtol=1e-5, atol=1e-5)
    trained = load_file(out / "trainable.safetensors")
    assert sorted(trained) == result.trainable
    for name, value in trained.items():
        torch.testing.assert_close(value, reloaded.state_dict()[name])
    snapshot = load_file(next((out / "snapshots").iterdir()))
    assert sorted(snapshot) == result.trainable  # merged weights under their original names
    assert all(not torch.equal(snapshot[n], base.state_dict()[n]) for n in snapshot)


def test_adapter_folder_loads_with_peft_and_rna(corpora: dict[str, Path], models: dict, tmp_path: Path) -> None:
    from peft import PeftModel

    base, tok = models["llama"]
    folder = tmp_path / "base"
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg, options = _config(tmp_path, corpora, method={"name": "rmu"}, lora={"save": "adapter"}, save_model=True,
                           model={"name_or_path": str(folder)})
    train(cfg, options)  # RMU from a folder: only layers 0..2 are loaded, the adapter fits the full model
    out = tmp_path / "out"
    assert (out / DONE).exists() and not (out / "model").exists()
    with_peft = PeftModel.from_pretrained(load_model(str(folder))[0], out / "adapter").eval()
    expected = _logits(with_peft, tok)
    merged, _ = load_model(str(out / "adapter"))  # what `rna eval OUT/adapter` loads
    torch.testing.assert_close(_logits(merged.eval(), tok), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, _logits(base.eval(), tok))
    trained = load_file(out / "trainable.safetensors")
    assert sorted(trained) == sorted(f"model.layers.{i}.mlp.down_proj.lora_{ab}.default.weight"
                                     for i in (0, 1, 2) for ab in "AB")


def test_resume_equals_uninterrupted(corpora: dict[str, Path], models: dict, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rna_train import trainer

    base, tok = models["llama"]
    whole = train(*_config(tmp_path / "a", corpora, method={"name": "npo", "retain_loss": "kl"}, checkpoint_every=2),
                  model_and_tokenizer=(copy.deepcopy(base), tok))
    save = trainer._save_periodic

    def interrupt_after_step_3(run: object, step: int) -> None:
        save(run, step)
        if step + 1 == 3:
            raise KeyboardInterrupt

    cfg, options = _config(tmp_path / "b", corpora, method={"name": "npo", "retain_loss": "kl"}, checkpoint_every=2)
    monkeypatch.setattr(trainer, "_save_periodic", interrupt_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, options, model_and_tokenizer=(copy.deepcopy(base), tok))
    monkeypatch.undo()
    resumed = train(cfg, options, resume=True, model_and_tokenizer=(copy.deepcopy(base), tok))
    assert [r["step"] for r in resumed.metrics] == [1, 2, 3, 4]
    helpers.assert_same_run(whole, resumed)


def test_lora_on_a_norm_is_refused(corpora: dict[str, Path], models: dict, tmp_path: Path) -> None:
    base, tok = models["llama"]
    raw_model = {"trainable": {"patterns": ["input_layernorm"]}}
    cfg, options = _config(tmp_path, corpora, method={"name": "rmu"})
    cfg.model.trainable.patterns = raw_model["trainable"]["patterns"]
    with pytest.raises(RNAError, match="linear layers") as info:
        train(cfg, options, model_and_tokenizer=(copy.deepcopy(base), tok))
    assert info.value.where == "model.trainable.patterns"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("arch", "pattern"), [("llama", "model.layers.{}.mlp.down_proj.weight"),
                                               ("gpt2", "transformer.h.{}.mlp.c_proj.weight")])
@pytest.mark.parametrize("rslora", [False, True])
def test_merge_from_tensors_equals_peft(models: dict, arch: str, pattern: str, rslora: bool) -> None:
    """The merge from tensors by name (what a state gathered from FSDP2 shards gives) equals peft's own
    ``W + get_delta_weight`` for Linear and GPT-2 Conv1D (fan_in_fan_out) layers, rsLoRA scaling too."""
    from rna_train import lora

    model = copy.deepcopy(models[arch][0])
    lora.inject(model, [pattern.format(i) for i in (0, 2)], rank=3, alpha=5.0, dropout=0.0, seed=0)
    if rslora:
        for layer in lora._layers(model).values():
            layer.scaling[lora.ADAPTER] = 5.0 / math.sqrt(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    want = {f"{name}.weight": layer.get_base_layer().weight + layer.get_delta_weight(lora.ADAPTER)
            for name, layer in lora._layers(model).items()}
    params = dict(model.named_parameters())
    got = lora.merged_from(model, {n: params[n].detach().clone() for n in lora.source_names(model)})
    assert sorted(got) == sorted(want) == lora.merged_names(model)
    for name, value in want.items():
        assert float((value - lora._layers(model)[name[:-len(".weight")]].get_base_layer().weight).abs().max()) > 1e-3
        torch.testing.assert_close(got[name], value.detach(), rtol=1e-6, atol=1e-6)
