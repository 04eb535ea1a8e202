"""The reference cache (computed before step 1) gives the uncached losses and skips reference forwards."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train import trainer
from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.refcache import ReferenceCache, length_sorted_chunks
from rna_train.step import TrainStep

CASES = [
    ("npo", "kl", "off", None), ("npo", "kl", "target", None), ("npo", "kl", "input", None),
    ("simnpo", "kl", "target", 1), ("dpo", "kl", "off", None), ("dpo", "mse", "input", None),
    ("adaptive_rmu", "rm", "target", None), ("rsv", "rm", "target", 1), ("rmu", "rm", "off", None),
    ("graddiff", "nll", "input", None),
]


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A forget corpus of exactly one batch: every step revisits the same sequences."""
    return helpers.write_corpora(tmp_path_factory.mktemp("one"), n_forget=4, n_retain=8)


def _run(tmp: Path, assets: dict[str, Path], corpora: dict[str, Path], method: str, retain: str, mode: str,
         rna_layer: int | None, monkeypatch: pytest.MonkeyPatch, **train: Any,
         ) -> tuple[trainer.TrainResult, list[int]]:
    """Train 4 steps (trainable layers 1-2 of 4, l = 2); returns the result and decoder-layer calls per step."""
    model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]), seed=0,
                            dtype="fp64")
    rna = {"mode": mode, "noise": 0.05, **({"layer": rna_layer} if rna_layer is not None else {})}
    raw = helpers.run_config(assets["tokenizer"], corpora, tmp / "out",
                             method={"name": method, "retain_loss": retain, "alpha": 1.0},
                             rna=rna, steps=4, lr=1e-2, max_grad_norm=1e6, **train)
    raw["model"]["trainable"] = {"layers": [1, 2]}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, options = load_config(tmp / "c.yaml")
    calls = {"n": 0}
    per_step: list[int] = []
    for layer in model.model.layers:
        layer.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    step = TrainStep.__call__

    def counted(*args: Any, **kwargs: Any) -> dict[str, float]:
        before = calls["n"]
        out = step(*args, **kwargs)
        per_step.append(calls["n"] - before)
        return out

    with monkeypatch.context() as m:
        m.setattr(TrainStep, "__call__", counted)
        result = trainer.train(cfg, options, model_and_tokenizer=(model, tok))
    return result, per_step


@pytest.mark.parametrize(("method", "retain", "mode", "rna_layer"), CASES)
def test_cached_reference_matches_uncached(method: str, retain: str, mode: str, rna_layer: int | None,
                                           assets: dict[str, Path], one_batch: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cached, fast = _run(tmp_path / "c", assets, one_batch, method, retain, mode, rna_layer, monkeypatch)
    plain, slow = _run(tmp_path / "p", assets, one_batch, method, retain, mode, rna_layer, monkeypatch,
                       reference_cache=False)
    helpers.assert_same_run(cached, plain)
    assert cached.metrics[-1]["grad_norm"] > 0
    assert sum(fast) < sum(slow)


@pytest.mark.parametrize(("method", "retain", "mode", "rna_layer", "expected"), [
    ("npo", "kl", "off", None, 6),      # updated forwards only: layers 1-3 on forget and on retain
    ("npo", "kl", "target", None, 7),   # + the reference's layer 3 above the noise at layer 2
    ("npo", "kl", "input", None, 6),    # input noise goes into the updated forward: no reference layer
    ("rmu", "rm", "target", None, 4),   # forwards stop at l = 2; noise lands on the cached layer-2 target
    ("rsv", "rm", "target", 1, 5),      # + the reference's layer 2 above the noise at layer 1
])
def test_steps_run_only_the_layers_noise_requires(method: str, retain: str, mode: str, rna_layer: int | None,
                                                  expected: int, assets: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cache, a step runs no reference layer unless fresh target noise must pass through it."""
    _, per_step = _run(tmp_path, assets, assets, method, retain, mode, rna_layer, monkeypatch)
    assert per_step == [expected] * 4


def test_zero_budget_caches_no_states_and_still_trains_right(assets: dict[str, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rna_train.refcache"):
        limited, per_step = _run(tmp_path / "z", assets, assets, "npo", "kl", "off", None, monkeypatch,
                                 reference_cache_gib=0.0)
    assert "cache budget of 0.00 GiB is reached" in caplog.text
    assert caplog.text.count("not caching layer") == 2  # the prefix and the last layer, once each
    plain, slow = _run(tmp_path / "p", assets, assets, "npo", "kl", "off", None, monkeypatch, reference_cache=False)
    for a, b in zip(limited.metrics, plain.metrics, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-10)
    # only the forget reference NLL (a value, not a state) is still cached: 3 layers per step saved
    assert [s - f for s, f in zip(slow, per_step, strict=True)] == [3] * 4


def _batch(rows: list[list[int]], width: int, offset: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, offset:offset + len(row)] = torch.tensor(row)
        mask[r, offset:offset + len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_keys_address_content_not_batch_position() -> None:
    a = ReferenceCache.keys(_batch([[5, 6, 7], [8, 9]], 4))
    b = ReferenceCache.keys(_batch([[1], [8, 9], [5, 6, 7]], 6))
    assert a[0] == b[2] and a[1] == b[1] and len(set(a + b)) == 3
    assert ReferenceCache.keys(_batch([[5, 6, 7]], 5, offset=1))[0] != a[0]  # another position
    labelled = {**_batch([[5, 6, 7]], 4), "label_mask": torch.tensor([[0, 1, 1, 0]])}
    assert ReferenceCache.keys(labelled)[0] != a[0]


def test_states_round_trip_through_padding_and_budget() -> None:
    cache = ReferenceCache(budget_bytes=5 * 2 * 8)  # five 2-dim float64 token states
    batch = _batch([[5, 6, 7], [8, 9]], 4)
    hidden = torch.arange(16, dtype=torch.float64).reshape(2, 4, 2)
    assert cache.put(batch, 3, (hidden, None))
    other = _batch([[8, 9], [5, 6, 7]], 3)
    out = cache.output(other, 3)
    assert isinstance(out, tuple) and out[1] is None
    torch.testing.assert_close(out[0][0, :2], hidden[1, :2])
    torch.testing.assert_close(out[0][1], hidden[0, :3])
    assert cache.output(other, 2) is None and cache.output(_batch([[4]], 1), 3) is None
    assert not cache.put(_batch([[4]], 1), 3, torch.zeros(1, 1, 2, dtype=torch.float64))  # over budget
    assert not cache.put(batch, 1, (hidden, torch.zeros(1)))  # a KV cache or weights: cannot replay
    holes = {"input_ids": torch.tensor([[5, 0, 6]]), "attention_mask": torch.tensor([[1, 0, 1]])}
    assert not cache.put(holes, 2, torch.zeros(1, 3, 2, dtype=torch.float64))  # real tokens not contiguous
    calls = []
    first = cache.values("v", batch, lambda: calls.append(1) or torch.tensor([1.0, 2.0]))
    again = cache.values("v", _batch([[8, 9], [5, 6, 7]], 3), lambda: calls.append(1) or torch.zeros(2))
    assert calls == [1] and again.tolist() == first.flip(0).tolist()


def test_chunks_depend_only_on_the_set_of_indices() -> None:
    lengths = [5, 3, 3, 9, 1]
    assert length_sorted_chunks(lengths, [3, 0, 1, 2, 4, 0], 2) == [[4, 1], [2, 0], [3]]
    assert length_sorted_chunks(lengths, [4, 2, 3, 1, 0], 2) == [[4, 1], [2, 0], [3]]
