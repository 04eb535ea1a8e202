"""Next-token losses computed from head states a chunk of positions at a time equal the full-logits ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as helpers
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rna_train import arch, losses, trainer
from rna_train.config import load_config
from rna_train.models import head_input, load_model


def _head(d: int, vocab: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, vocab, bias=True, dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), seq=st.integers(2, 9), chunk=st.integers(1, 10), seed=st.integers(0, 10**6))
def test_chunked_terms_and_gradients_equal_full_logits(batch: int, seq: int, chunk: int, seed: int) -> None:
    head = _head(5, 7, seed)
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, seq, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(batch, seq, 5, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 7, (batch, seq), generator=gen)
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    mask = (torch.arange(seq).unsqueeze(0) < lengths.unsqueeze(1)).long()
    labels = torch.randint(0, 2, (batch, seq), generator=gen)
    pairs = [
        (lambda: losses.sequence_nll(head(states), ids, mask, labels)[0].sum(),
         lambda: losses.head_sequence_nll(states, head, ids, mask, labels, chunk=chunk)[0].sum()),
        (lambda: losses.mean_nll(head(states), ids, mask, 3.0),
         lambda: losses.head_mean_nll(states, head, ids, mask, 3.0, chunk=chunk)),
        (lambda: losses.kl_ref_theta(head(states), head(ref), mask),
         lambda: losses.head_kl_ref_theta(states, ref, head, mask, chunk=chunk)),
        (lambda: losses.logsoftmax_mse(head(states), head(ref), mask, 2.5),
         lambda: losses.head_logsoftmax_mse(states, ref, head, mask, 2.5, chunk=chunk)),
    ]
    for full, chunked in pairs:
        a = full()
        (grad_a,) = torch.autograd.grad(a, states)
        b = chunked()
        (grad_b,) = torch.autograd.grad(b, states)
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_b, grad_a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_logits_head_reproduces_the_models_logits(family: str, assets: dict[str, Path]) -> None:
    config = dict(helpers.TINY.get(family, {**helpers.TINY["llama"], "model_type": "gemma2", "head_dim": 8,
                                            "final_logit_softcapping": 0.5}))
    model, _ = load_model(from_config=config, tokenizer=str(assets["tokenizer"]), seed=0, dtype="fp64")
    head = arch.logits_head(model)
    assert head is not None
    ids = torch.randint(4, 40, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        states = head_input(model, ids, mask)
        torch.testing.assert_close(head(states), full, rtol=1e-12, atol=1e-12)
    if family == "gemma2":
        assert float(full.abs().max()) <= 0.5  # the soft cap was applied


@pytest.mark.parametrize(("method", "retain", "mode"), [
    ("npo", "kl", "target"), ("simnpo", "mse", "input"), ("dpo", "kl", "off"), ("ga", "none", "off"),
    ("graddiff", "nll", "input"),
])
def test_chunked_run_equals_full_logits_run(method: str, retain: str, mode: str, assets: dict[str, Path],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One position per chunk (a 1-byte budget) against materialised logits: same metrics and weights."""
    results = []
    chunks = []
    chunked_fn = losses._chunked

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        chunks[-1] += 1
        return chunked_fn(*args, **kwargs)

    monkeypatch.setattr(losses, "_chunked", counted)
    for mib in (2**-20, 0.0):
        chunks.append(0)
        model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]), seed=0,
                                dtype="fp64")
        out = tmp_path / f"m{mib}"
        raw: dict[str, Any] = helpers.run_config(
            assets["tokenizer"], assets, out / "out", method={"name": method, "retain_loss": retain, "alpha": 1.0},
            rna={"mode": mode, "noise": 0.05}, steps=3, lr=1e-2, max_grad_norm=1e6, head_chunk_mib=mib)
        out.mkdir(parents=True)
        (out / "c.yaml").write_text(yaml.safe_dump(raw))
        cfg, options = load_config(out / "c.yaml")
        results.append(trainer.train(cfg, options, model_and_tokenizer=(model, tok)))
    chunked, full = results
    assert chunks[0] > 0 and chunks[1] == 0
    helpers.assert_same_run(chunked, full)
