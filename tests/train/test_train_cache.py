"""Cached per-sequence reference values give the uncached losses (float64 tiny models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train import trainer
from rna_train.config import load_config
from rna_train.methods.base import StepContext
from rna_train.models import load_model

CASES = [("npo", "kl", "target"), ("dpo", "kl", "off"), ("dpo", "mse", "input"), ("adaptive_rmu", "rm", "target")]


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A forget corpus of exactly one batch: every step revisits the same sequences."""
    return helpers.write_corpora(tmp_path_factory.mktemp("one"), n_forget=4, n_retain=8)


def _run(tmp: Path, assets: dict[str, Path], corpora: dict[str, Path], method: str, retain: str, mode: str,
         monkeypatch: pytest.MonkeyPatch, *, cache: bool) -> tuple[trainer.TrainResult, dict[str, int]]:
    model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]), seed=0,
                            dtype="fp64")
    raw = helpers.run_config(assets["tokenizer"], corpora, tmp / "out",
                             method={"name": method, "retain_loss": retain, "alpha": 1.0},
                             rna={"mode": mode, "noise": 0.05}, steps=4, lr=1e-2, max_grad_norm=1e6)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, options = load_config(tmp / "c.yaml")
    calls = {"ref_logits": 0, "ref_hidden": 0}
    original = trainer.prepare

    def prepare(*args: Any, **kwargs: Any) -> trainer.Prepared:
        prep = original(*args, **kwargs)
        prep.method.cache_reference = cache
        return prep

    def counted(name: str) -> Any:
        inner = getattr(StepContext, name)

        def wrapper(self: StepContext, *args: Any) -> torch.Tensor:
            calls[name] += 1
            return inner(self, *args)
        return wrapper

    with monkeypatch.context() as m:
        m.setattr(trainer, "prepare", prepare)
        for name in calls:
            m.setattr(StepContext, name, counted(name))
        result = trainer.train(cfg, options, model_and_tokenizer=(model, tok))
    return result, calls


@pytest.mark.parametrize(("method", "retain", "mode"), CASES)
def test_cached_reference_matches_uncached(method: str, retain: str, mode: str, assets: dict[str, Path],
                                           one_batch: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cached, fast_calls = _run(tmp_path / "c", assets, one_batch, method, retain, mode, monkeypatch, cache=True)
    plain, slow_calls = _run(tmp_path / "p", assets, one_batch, method, retain, mode, monkeypatch, cache=False)
    for a, b in zip(cached.metrics, plain.metrics, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-10, abs=1e-12), (key, a, b)
    params = dict(plain.model.named_parameters())
    for name, value in cached.model.named_parameters():
        torch.testing.assert_close(value, params[name], rtol=1e-11, atol=1e-12)
    steps = len(cached.metrics)
    forwards = 2 if method == "dpo" else 1  # reference forwards per forget batch
    key = "ref_hidden" if method == "adaptive_rmu" else "ref_logits"
    # the forget batch's reference runs at the first step only; the retain term keeps its own
    assert slow_calls[key] - fast_calls[key] == forwards * (steps - 1)
