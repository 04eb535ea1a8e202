"""NPO's two NLL reductions (issue 13, item 10): per-sequence sums (the paper) and the batch token-mean
(the reference code), checked against values computed by hand from the same NLLs."""

from __future__ import annotations

import math

import pytest
import torch

from rna_train.config import TopicConfig
from rna_train.methods import get_method
from rna_train.methods.base import Setup


class _Ctx:
    """The two StepContext calls NPO makes: summed NLL per sequence with token counts, and no cache."""

    cache = None

    def __init__(self, nll: list[float], count: list[int]) -> None:
        self.nll, self.count = torch.tensor(nll, dtype=torch.float64), torch.tensor(count, dtype=torch.float64)

    def sequence_nll(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.nll, self.count


@pytest.mark.parametrize("reduction", ["sum", "batch_mean"])
def test_npo_reductions_match_hand_computed_losses(reduction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    npo = get_method("npo")
    options = npo.Options(layer=1, beta=0.1, nll_reduction=reduction)
    method = npo(options, Setup(hidden_size=8, topics=[TopicConfig()], seed=0, tokenizer=None))
    nll, ref, count = [30.0, 10.0], [20.0, 12.0], [10, 4]
    ctx = _Ctx(nll, count)
    monkeypatch.setattr(method, "reference_nll", lambda ctx, batch: torch.tensor(ref, dtype=torch.float64))
    loss, logged = method.forget_loss(ctx, {}, 0)  # type: ignore[arg-type]

    def term(x: float) -> float:
        return -(2 / 0.1) * math.log(1 / (1 + math.exp(-0.1 * x)))

    want = (term(30 - 20) + term(10 - 12)) / 2 if reduction == "sum" else term(40 / 14 - 32 / 14)
    assert float(loss) == pytest.approx(want, rel=1e-12)
    assert logged["forget_nll"] == pytest.approx(40 / 14, rel=1e-12)


def test_the_zephyr_npo_recipes_use_the_reference_reduction() -> None:
    from pathlib import Path

    from rna_train.config import load_config

    root = Path(__file__).resolve().parents[2] / "experiments" / "configs"
    for name in ("zephyr_npo.yaml", "zephyr_npo_rna.yaml"):
        assert load_config(root / name)[0].method["nll_reduction"] == "batch_mean"
