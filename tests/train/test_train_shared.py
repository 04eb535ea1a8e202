"""The memory-saving execution gives the straightforward computation's numbers (float64 tiny models).

The trainer runs the frozen reference as the live model with the original trainable values swapped
in (no deep copy), computes the layers below the first trainable one once per batch and caches the
reference's outputs before training (tests/train/test_train_cache.py checks the cache alone); these
tests run the same configs with a deep-copied reference and full forwards and compare every
logged loss term, the gradient norms and the final weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import train_helpers as helpers
import yaml

from rna_train import trainer
from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.step import TrainStep

CASES = [
    ("llama", "rmu", "rm", "target"),
    ("llama", "adaptive_rmu", "rm", "input"),
    ("gpt2", "rsv", "rm", "target"),
    ("llama", "npo", "kl", "target"),
    ("llama", "npo", "kl", "input"),
    ("gpt2", "simnpo", "kl", "off"),
    ("llama", "dpo", "mse", "target"),
]


def _run(tmp: Path, assets: dict[str, Path], arch: str, method: str, retain: str, mode: str,
         monkeypatch: pytest.MonkeyPatch, *, straightforward: bool, cache: bool = True) -> trainer.TrainResult:
    model, tok = load_model(from_config=helpers.TINY[arch], tokenizer=str(assets["tokenizer"]), seed=0,
                            dtype="fp64")
    raw = helpers.run_config(assets["tokenizer"], assets, tmp / "out", arch=arch,
                             method={"name": method, "retain_loss": retain, "alpha": 1.0},
                             rna={"mode": mode, "noise": 0.05}, steps=3, lr=1e-2, max_grad_norm=1e6)
    raw["model"]["trainable"] = {"layers": [1, 2]}
    raw["train"]["reference_cache"] = cache and not straightforward
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, options = load_config(tmp / "c.yaml")
    with monkeypatch.context() as m:
        if straightforward:
            original = trainer.prepare

            def deep_copy(*args: Any, **kwargs: Any) -> trainer.Prepared:
                return original(*args, **{**kwargs, "shared_reference": False})

            m.setattr(trainer, "prepare", deep_copy)
            m.setattr(trainer, "_shared_layers", lambda _prep: 0)
            m.setattr(TrainStep, "_split_backward", lambda _self: False)
        return trainer.train(cfg, options, model_and_tokenizer=(model, tok))


@pytest.mark.parametrize(("arch", "method", "retain", "mode"), CASES)
def test_shared_reference_matches_deep_copy(arch: str, method: str, retain: str, mode: str,
                                            assets: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _run(tmp_path / "fast", assets, arch, method, retain, mode, monkeypatch, straightforward=False)
    slow = _run(tmp_path / "slow", assets, arch, method, retain, mode, monkeypatch, straightforward=True)
    assert fast.reference is None and slow.reference is not None
    helpers.assert_same_run(fast, slow)
    assert fast.metrics[-1]["grad_norm"] > 0


def test_prefix_is_shared_and_reference_is_not_copied(assets: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer 0 (below the first trainable layer) runs once per batch, not once per forward."""
    calls = {"n": 0}
    original = trainer.prepare

    def counting_prepare(*args: object, **kwargs: object) -> trainer.Prepared:
        prep = original(*args, **kwargs)
        layer0 = prep.model.model.layers[0]
        layer0.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
        return prep

    monkeypatch.setattr(trainer, "prepare", counting_prepare)
    result = _run(tmp_path, assets, "llama", "rsv", "rm", "off", monkeypatch, straightforward=False, cache=False)
    # without the reference cache, per step: one prefix forward for the forget batch and one for the retain batch
    assert calls["n"] == 2 * len(result.metrics)
    assert result.reference is None
