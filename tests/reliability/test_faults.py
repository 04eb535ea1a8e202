"""Injected faults: non-finite losses, out-of-memory, a full disk while checkpointing."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_theory import RNAError
from rna_train import checkpoint, losses
from rna_train.config import load_config
from rna_train.trainer import DONE, train


def _cfg(tmp_path: Path, assets: dict[str, Path], **train_opts: object):
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", method={"name": "rmu", "alpha": 10.0},
                             **{"steps": 5, "checkpoint_every": 1, "save_model": True, **train_opts})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _poison_forget_from(monkeypatch: pytest.MonkeyPatch, first_bad_call: int, last_bad_call: int | None = None):
    """Make RMU's forget MSE NaN on calls first..last (1-based); the retain MSE is the 2nd call per step."""
    real = losses.masked_mse
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        step = (calls["n"] + 1) // 2
        if calls["n"] % 2 == 1 and step >= first_bad_call and (last_bad_call is None or step <= last_bad_call):
            return out * math.nan
        return out

    monkeypatch.setattr(losses, "masked_mse", poisoned)


def test_nan_stops_keeps_last_good_checkpoint_and_saves_no_model(tmp_path, assets, monkeypatch):
    cfg, options = _cfg(tmp_path, assets)
    _poison_forget_from(monkeypatch, 3)
    with pytest.raises(RNAError) as exc:
        train(cfg, options)
    msg = str(exc.value)
    assert "step 3" in msg and "'rmu'" in msg and "forget" in msg and "no model was saved" in msg
    out = Path(cfg.output_dir)
    assert not (out / DONE).exists() and not (out / "model").exists()
    kept = checkpoint.list_checkpoints(out / "checkpoints")
    assert kept[-1].name == "step-0000002"  # steps 1-2 were good; step 3 was never checkpointed
    assert str(kept[-1]) in msg


def test_nonfinite_gradient_with_finite_loss_names_the_parameter(tmp_path, assets, monkeypatch):
    cfg, options = _cfg(tmp_path, assets)
    real = losses.masked_mse

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        return out + torch.sqrt(out * 0.0)  # the value is unchanged; the gradient is 0 * inf = NaN

    monkeypatch.setattr(losses, "masked_mse", poisoned)
    with pytest.raises(RNAError) as exc:
        train(cfg, options)
    msg = str(exc.value)
    assert "non-finite gradient of model." in msg and "step 1" in msg and "'rmu'" in msg
    out = Path(cfg.output_dir)
    assert not (out / DONE).exists() and not (out / "model").exists()
    assert checkpoint.list_checkpoints(out / "checkpoints") == []


def test_skip_policy_skips_then_gives_up(tmp_path, assets, monkeypatch):
    cfg, options = _cfg(tmp_path, assets, nonfinite="skip", max_skipped_steps=1)
    _poison_forget_from(monkeypatch, 2, 2)
    result = train(cfg, options)
    assert (Path(cfg.output_dir) / DONE).exists()
    assert all(math.isfinite(v) for p in result.model.parameters() for v in p.detach().flatten()[:5].tolist())
    steps = [m["step"] for m in result.metrics]
    assert 2 not in steps and steps[-1] == 5
    monkeypatch.undo()
    (tmp_path / "again").mkdir()
    cfg, options = _cfg(tmp_path / "again", assets, nonfinite="skip", max_skipped_steps=1)
    _poison_forget_from(monkeypatch, 1)
    with pytest.raises(RNAError, match="skipped 2 step"):
        train(cfg, options)


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, assets, monkeypatch):
    cfg, options = _cfg(tmp_path, assets, steps=5, checkpoint_every=2)
    real = checkpoint.save_file
    calls = {"n": 0}

    def failing(path, tensors, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the second checkpoint's first file, mid-write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, tensors, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", failing)
    with pytest.raises(RNAError) as exc:
        train(cfg, options)
    out = Path(cfg.output_dir)
    kept = checkpoint.list_checkpoints(out / "checkpoints")
    msg = str(exc.value)
    assert "No space left" in msg and "step 4" in msg and f"{kept[-1]} is intact" in msg
    assert [k.name for k in kept] == ["step-0000002"] and not (out / DONE).exists()
    assert not list((out / "checkpoints").glob(".*.tmp"))  # the half-written folder is gone
    for f in kept[0].glob("*.safetensors"):
        load_file(str(f))  # the previous checkpoint still reads


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   MemoryError()])
def test_out_of_memory_names_the_settings_to_lower(tmp_path, assets, monkeypatch, error):
    cfg, options = _cfg(tmp_path, assets)
    from rna_train.step import TrainStep

    def oom(*args, **kwargs):
        raise error

    monkeypatch.setattr(TrainStep, "__call__", oom)
    with pytest.raises(RNAError) as exc:
        train(cfg, options)
    msg = str(exc.value)
    for setting in ("train.batch_size", "data.max_length", "train.grad_accum", "model.dtype"):
        assert setting in msg


def test_huge_learning_rate_stops_without_monkeypatching(tmp_path, assets):
    """Config-only injection: lr=1e30 blows the weights up after step 1; step 2's loss is NaN."""
    cfg, options = _cfg(tmp_path, assets, lr=1e30)
    with pytest.raises(RNAError) as exc:
        train(cfg, options)
    msg = str(exc.value)
    assert "non-finite" in msg and "step 2" in msg and "'rmu'" in msg and "train.lr" in msg
    out = Path(cfg.output_dir)
    assert not (out / DONE).exists() and not (out / "model").exists()
    assert checkpoint.list_checkpoints(out / "checkpoints")[-1].name == "step-0000001"
