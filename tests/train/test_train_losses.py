"""Loss terms against independent hand computations on fixed tensors, padding included."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rna_train import losses

# Two sequences, the second right-padded after 2 tokens; padded entries hold garbage on purpose.
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
IDS = torch.tensor([[0, 2, 1], [1, 0, 3]])
LOGITS = torch.tensor([
    [[0.1, 0.5, -0.3, 0.0], [1.0, -1.0, 0.2, 0.3], [0.0, 0.0, 0.0, 0.0]],
    [[0.7, 0.1, 0.1, -0.5], [-0.2, 0.4, 0.9, 0.0], [99.0, -99.0, 5.0, 7.0]],
])
REF_LOGITS = torch.tensor([
    [[0.0, 0.2, 0.1, 0.3], [0.5, -0.5, 0.0, 0.1], [0.2, 0.1, -0.1, 0.4]],
    [[0.3, 0.3, 0.0, -0.2], [0.1, 0.2, 0.3, 0.4], [-50.0, 50.0, 1.0, 2.0]],
])


def _logsoftmax(row: list[float]) -> list[float]:
    m = max(row)
    z = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - z for v in row]


def _real(b: int, t: int) -> bool:
    return bool(MASK[b, t])


def test_masked_mse_ignores_padding() -> None:
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[0.0, 1.0], [2.0, 2.0], [100.0, -100.0]]])
    target = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    total, count = 0.0, 0
    for b in range(2):
        for t in range(3):
            if _real(b, t):
                for k in range(2):
                    total += (float(pred[b, t, k]) - float(target[b, t, k])) ** 2
                    count += 1
    assert losses.masked_mse(pred, target, MASK).item() == pytest.approx(total / count, rel=1e-6)


def test_mean_token_norm_ignores_padding() -> None:
    h = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]], [[1.0, 0.0], [0.0, 2.0], [1e3, 1e3]]])
    expected = (5.0 + 1.0 + 10.0 + 1.0 + 2.0) / 5
    assert losses.mean_token_norm(h, MASK).item() == pytest.approx(expected, rel=1e-6)


def _hand_nll() -> tuple[list[float], list[int]]:
    sums, counts = [0.0, 0.0], [0, 0]
    for b in range(2):
        for t in range(2):  # position t predicts token t + 1
            if _real(b, t) and _real(b, t + 1):
                logp = _logsoftmax(LOGITS[b, t].tolist())[int(IDS[b, t + 1])]
                sums[b] -= logp
                counts[b] += 1
    return sums, counts


def test_sequence_and_mean_nll() -> None:
    sums, counts = _hand_nll()
    nll, count = losses.sequence_nll(LOGITS, IDS, MASK)
    assert nll.tolist() == pytest.approx(sums, rel=1e-6)
    assert count.tolist() == counts
    assert losses.mean_nll(LOGITS, IDS, MASK).item() == pytest.approx(sum(sums) / sum(counts), rel=1e-6)


def test_sequence_nll_label_mask_scores_answer_only() -> None:
    labels = torch.tensor([[0, 0, 1], [0, 1, 1]])
    nll, count = losses.sequence_nll(LOGITS, IDS, MASK, labels)
    first = -_logsoftmax(LOGITS[0, 1].tolist())[int(IDS[0, 2])]
    second = -_logsoftmax(LOGITS[1, 0].tolist())[int(IDS[1, 1])]
    assert nll.tolist() == pytest.approx([first, second], rel=1e-6)
    assert count.tolist() == [1, 1]


def test_kl_and_logsoftmax_mse_ignore_padding() -> None:
    kl_total, mse_total, n = 0.0, 0.0, 0
    for b in range(2):
        for t in range(3):
            if not _real(b, t):
                continue
            lq = _logsoftmax(LOGITS[b, t].tolist())
            lp = _logsoftmax(REF_LOGITS[b, t].tolist())
            kl_total += sum(math.exp(p) * (p - q) for p, q in zip(lp, lq, strict=True))
            mse_total += sum((q - p) ** 2 for p, q in zip(lp, lq, strict=True)) / 4
            n += 1
    assert losses.kl_ref_theta(LOGITS, REF_LOGITS, MASK).item() == pytest.approx(kl_total / n, rel=1e-5)
    assert losses.logsoftmax_mse(LOGITS, REF_LOGITS, MASK).item() == pytest.approx(mse_total / n, rel=1e-5)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_npo_simnpo_dpo_formulas() -> None:
    nll, ref = torch.tensor([3.0, 5.0]), torch.tensor([2.5, 6.0])
    beta = 0.1
    npo = -(2 / beta) * (_log_sigmoid(beta * 0.5) + _log_sigmoid(beta * -1.0)) / 2
    assert losses.npo_loss(nll, ref, beta).item() == pytest.approx(npo, rel=1e-6)
    length = torch.tensor([2.0, 4.0])
    sim = -(2 / beta) * (_log_sigmoid(beta * (1.5 - 0.3)) + _log_sigmoid(beta * (1.25 - 0.3))) / 2
    assert losses.simnpo_loss(nll, length, beta, 0.3).item() == pytest.approx(sim, rel=1e-6)
    cw, cwr, cl, clr = (torch.tensor(v) for v in ([-1.0, -2.0], [-1.5, -1.0], [-4.0, -3.0], [-3.0, -3.5]))
    margins = [(-1.0 + 1.5) - (-4.0 + 3.0), (-2.0 + 1.0) - (-3.0 + 3.5)]
    dpo = -(2 / beta) * sum(_log_sigmoid(beta * m) for m in margins) / 2
    assert losses.dpo_loss(cw, cwr, cl, clr, beta).item() == pytest.approx(dpo, rel=1e-6)


def test_padding_gradients_are_zero() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    loss = (losses.mean_nll(logits, IDS, MASK) + losses.kl_ref_theta(logits, REF_LOGITS, MASK)
            + losses.logsoftmax_mse(logits, REF_LOGITS, MASK))
    loss.backward()
    assert torch.all(logits.grad[1, 2] == 0)


def test_global_counts_replace_local_ones() -> None:
    """Given counts (the trainer's global-batch counts per micro-batch) replace the batch's own."""
    pred, target = torch.ones(2, 3, 2), torch.zeros(2, 3, 2)
    assert losses.masked_mse(pred, target, MASK, tokens=10.0).item() == pytest.approx(5 * 2 / (10 * 2))
    sums, _ = _hand_nll()
    assert losses.mean_nll(LOGITS, IDS, MASK, pairs=7.0).item() == pytest.approx(sum(sums) / 7, rel=1e-6)
    base = losses.kl_ref_theta(LOGITS, REF_LOGITS, MASK)
    assert losses.kl_ref_theta(LOGITS, REF_LOGITS, MASK, tokens=10.0).item() == pytest.approx(
        base.item() * 5 / 10, rel=1e-6)
    base = losses.logsoftmax_mse(LOGITS, REF_LOGITS, MASK)
    assert losses.logsoftmax_mse(LOGITS, REF_LOGITS, MASK, tokens=2.5).item() == pytest.approx(
        base.item() * 5 / 2.5, rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 3), seq=st.integers(2, 6), extra=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_padding_never_changes_a_loss(batch: int, seq: int, extra: int, seed: int) -> None:
    """Appending padded positions holding arbitrary values leaves every masked loss unchanged."""
    gen = torch.Generator().manual_seed(seed)
    vocab, d = 5, 3
    lengths = torch.randint(1, seq + 1, (batch,), generator=gen)
    mask = (torch.arange(seq).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    logits, ref = torch.randn(batch, seq, vocab, generator=gen), torch.randn(batch, seq, vocab, generator=gen)
    h, t = torch.randn(batch, seq, d, generator=gen), torch.randn(batch, seq, d, generator=gen)

    def pad(x: torch.Tensor) -> torch.Tensor:
        junk = 100 * torch.randn(x.shape[0], extra, *x.shape[2:], generator=gen)
        return torch.cat([x, junk.to(x.dtype)], 1)

    pmask = torch.cat([mask, torch.zeros(batch, extra, dtype=torch.long)], 1)
    pids = torch.cat([ids, torch.randint(0, vocab, (batch, extra), generator=gen)], 1)
    pairs = [
        (losses.masked_mse(h, t, mask), losses.masked_mse(pad(h), pad(t), pmask)),
        (losses.mean_token_norm(h, mask), losses.mean_token_norm(pad(h), pmask)),
        (losses.mean_nll(logits, ids, mask), losses.mean_nll(pad(logits), pids, pmask)),
        (losses.kl_ref_theta(logits, ref, mask), losses.kl_ref_theta(pad(logits), pad(ref), pmask)),
        (losses.logsoftmax_mse(logits, ref, mask), losses.logsoftmax_mse(pad(logits), pad(ref), pmask)),
        (losses.sequence_nll(logits, ids, mask)[0], losses.sequence_nll(pad(logits), pids, pmask)[0]),
    ]
    for clean, padded in pairs:
        torch.testing.assert_close(padded, clean, rtol=1e-5, atol=1e-6)
