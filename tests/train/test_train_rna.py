"""RNA through the trainer's real loss code: theory.md C4 and C5, placement, zero cost when off.

Statistical tests use fixed seeds and thresholds with a false-failure probability <= 1e-6 for a
correct implementation (Bonferroni over the projections tested).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
from scipy import stats

from rna_theory.noise import NoiseSchedule
from rna_train import arch
from rna_train.data import collate
from rna_train.models import frozen_copy, load_model, select_trainable
from rna_train.rna import RNA
from rna_train.step import StepContext, retain_term

LAYER = 2
ALPHA = 1e-6  # false-failure probability budget per test
PROJECTIONS = 4


@pytest.fixture(scope="module")
def setup(assets: dict[str, Path]) -> dict:
    """A float64 tiny Llama whose trainable weights differ from its frozen reference, and a batch."""
    model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]),
                            dtype="fp64", seed=0, attn_implementation="eager")
    reference = frozen_copy(model)
    names = select_trainable(model, [0, 1, 2])
    gen = torch.Generator().manual_seed(5)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].add_(0.1 * torch.randn(params[n].shape, generator=gen, dtype=torch.float64))
    model.eval()
    texts = ["the virus of a cell and the host", "king river war", "music art language trade empire poem"]
    batch = collate(tok(texts)["input_ids"], tok.pad_token_id)
    return {"model": model, "reference": reference, "params": [params[n] for n in names], "batch": batch}


def _grad(s: dict, kind: str, rna: RNA, seed: int) -> torch.Tensor:
    ctx = StepContext(model=s["model"], forward=s["model"], reference=s["reference"], rna=rna, step=0,
                      generator=torch.Generator().manual_seed(seed))
    loss = retain_term(ctx, s["batch"], kind, LAYER)
    grads = torch.autograd.grad(loss, s["params"])
    return torch.cat([g.reshape(-1) for g in grads])


def _directions(dim: int) -> torch.Tensor:
    return torch.randn(PROJECTIONS, dim, generator=torch.Generator().manual_seed(11), dtype=torch.float64)


def test_c4_target_noise_rm_gradient_is_unbiased(setup: dict) -> None:
    """E_delta grad alpha*MSE(h_theta, h_frozen + delta) = clean gradient (exact t-test)."""
    nu = 0.5
    noisy = RNA(mode="target", layer=LAYER, schedule=NoiseSchedule(nu=nu))
    clean = _grad(setup, "rm", RNA(), 0)
    assert clean.norm() > 0
    # Premise of the exact test: the gradient is linear in the Gaussian draw (doubling nu with the
    # same draw doubles the deviation from the clean gradient), up to the float32 softmax that
    # eager attention uses even in a float64 model.
    doubled = RNA(mode="target", layer=LAYER, schedule=NoiseSchedule(nu=2 * nu))
    dev1 = _grad(setup, "rm", noisy, 3) - clean
    dev2 = _grad(setup, "rm", doubled, 3) - clean
    torch.testing.assert_close(dev2, 2 * dev1, rtol=0, atol=1e-5 * float(dev1.abs().max()))
    assert dev1.norm() > 1e-3 * clean.norm(), "noise had no effect: the test would be vacuous"
    draws = 200
    devs = torch.stack([_grad(setup, "rm", noisy, 100 + j) - clean for j in range(draws)])
    proj = devs @ _directions(clean.numel()).T  # draws x projections, each column i.i.d. Gaussian
    t = proj.mean(0) / (proj.std(0, unbiased=True) / math.sqrt(draws))
    threshold = stats.t.isf(ALPHA / (2 * PROJECTIONS), draws - 1)
    assert torch.all(t.abs() < threshold), (t, threshold)
    # Averaging shrinks the deviation like 1/sqrt(draws): the mean deviation is far below one draw's.
    assert devs.mean(0).norm() < 0.3 * devs.norm(dim=1).mean()


def _noisy_ref_probs(s: dict, rna: RNA, seed: int) -> torch.Tensor:
    """p_ref(.|z + delta) for the draw that generator ``seed`` gives the retain loss."""
    b = s["batch"]
    ctx = StepContext(model=s["model"], forward=s["model"], reference=s["reference"], rna=rna, step=0,
                      generator=torch.Generator().manual_seed(seed))
    with rna.perturb("target", s["reference"], b["attention_mask"], 0, ctx.generator):
        return torch.softmax(ctx.ref_logits(b), -1)


def _ce_grad(s: dict, probs: torch.Tensor) -> torch.Tensor:
    """Gradient of the mask-averaged cross-entropy from ``probs`` to p_theta, written out by hand."""
    b = s["batch"]
    mask = b["attention_mask"].double()
    logits = s["model"](input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    ce = -((probs * torch.log_softmax(logits, -1)).sum(-1) * mask).sum() / mask.sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(ce, s["params"])])


def test_c5_target_noise_kl_distils_smoothed_reference(setup: dict) -> None:
    """E_delta grad KL(p_ref(.|z+delta) || p_theta) = grad CE(pbar, p_theta).

    Per draw this is an algebraic identity (checked to float precision); in expectation it is
    checked against pbar estimated from independent draws with a two-sample Welch interval at
    level 1e-6 (Bonferroni over projections; normal approximation of means of bounded variables).
    """
    rna = RNA(mode="target", layer=LAYER, schedule=NoiseSchedule(nu=1.0))
    dirs = _directions(sum(p.numel() for p in setup["params"]))
    for seed in (1, 2):
        kl = _grad(setup, "kl", rna, seed)
        torch.testing.assert_close(kl, _ce_grad(setup, _noisy_ref_probs(setup, rna, seed)),
                                   rtol=0, atol=1e-6 * float(kl.abs().max()))
    draws, ref_draws = 150, 300
    x = torch.stack([_grad(setup, "kl", rna, 1000 + j) for j in range(draws)]) @ dirs.T
    y = torch.stack([_ce_grad(setup, _noisy_ref_probs(setup, rna, 5000 + j))
                     for j in range(ref_draws)]) @ dirs.T
    se = (x.var(0) / draws + y.var(0) / ref_draws).sqrt()
    z = float(stats.norm.isf(ALPHA / (2 * PROJECTIONS)))
    assert torch.all((x.mean(0) - y.mean(0)).abs() < z * se), ((x.mean(0) - y.mean(0)) / se, z)
    # Power: the clean (unsmoothed) reference's gradient lies outside the interval.
    clean = _grad(setup, "kl", RNA(), 0) @ dirs.T
    assert torch.any((clean - x.mean(0)).abs() > z * se), "smoothing is undetectable at this nu"


def _hook_counts(s: dict, kind: str, rna: RNA) -> tuple[int, list[int]]:
    """Reference forwards and hooks seen on the perturbed layers during one retain loss."""
    seen: list[int] = []
    calls = [0]
    ref_layer = arch.decoder_layers(s["reference"])[LAYER]
    model_layer = arch.decoder_layers(s["model"])[LAYER]
    h1 = s["reference"].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    h2 = ref_layer.register_forward_pre_hook(lambda m, _i: seen.append(len(m._forward_hooks)))
    h3 = model_layer.register_forward_pre_hook(lambda m, _i: seen.append(len(m._forward_hooks)))
    try:
        _grad(s, kind, rna, 0)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    return calls[0], seen


def test_off_costs_nothing(setup: dict) -> None:
    """No hook and no extra forward when RNA is off or its schedule is identically zero."""
    for kind in ("rm", "kl"):
        calls_off, hooks_off = _hook_counts(setup, kind, RNA())
        zero = RNA(mode="target", layer=LAYER, schedule=NoiseSchedule(nu=0.0))
        assert not zero.active
        calls_zero, hooks_zero = _hook_counts(setup, kind, zero)
        calls_on, hooks_on = _hook_counts(setup, kind, RNA(mode="target", layer=LAYER,
                                                           schedule=NoiseSchedule(nu=0.1)))
        assert calls_off == calls_zero == calls_on == 1
        assert hooks_off == hooks_zero
        assert sum(hooks_on) == sum(hooks_off) + 1  # exactly one noise hook, on the reference
    for h in (setup["model"], setup["reference"]):
        assert all(not layer._forward_hooks for layer in arch.decoder_layers(h))


@pytest.mark.parametrize("mode", ["target", "input"])
def test_noise_placement(setup: dict, mode: str) -> None:
    """target noise perturbs only the reference forward, input noise only the updated model's."""
    b = setup["batch"]
    rna = RNA(mode=mode, layer=LAYER, schedule=NoiseSchedule(nu=0.3))
    ctx = StepContext(model=setup["model"], forward=setup["model"], reference=setup["reference"], rna=rna,
                      step=0, generator=torch.Generator().manual_seed(0))
    clean_ref = ctx.ref_hidden(b, LAYER)
    with torch.no_grad():
        clean_theta = ctx.hidden(b, LAYER)
    with rna.perturb("target", setup["reference"], b["attention_mask"], 0, ctx.generator):
        ref = ctx.ref_hidden(b, LAYER)
    with rna.perturb("input", setup["model"], b["attention_mask"], 0, ctx.generator), torch.no_grad():
        theta = ctx.hidden(b, LAYER)
    pad = b["attention_mask"] == 0
    assert torch.equal(ref[pad], clean_ref[pad]) and torch.equal(theta[pad], clean_theta[pad])
    assert torch.equal(ref, clean_ref) == (mode == "input")
    assert torch.equal(theta, clean_theta) == (mode == "target")


def test_noise_is_seeded_per_step() -> None:
    rna = RNA(mode="target", layer=0, schedule=NoiseSchedule(nu=1.0), seed=3)
    a = torch.randn(4, generator=rna.generator(7, "cpu"))
    assert torch.equal(a, torch.randn(4, generator=rna.generator(7, "cpu")))
    assert not torch.equal(a, torch.randn(4, generator=rna.generator(8, "cpu")))


def test_reference_always_gets_the_mask(setup: dict) -> None:
    """Every forward of the frozen reference receives the attention mask (reference-code defect)."""
    seen: list[bool] = []
    handle = setup["reference"].register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs.get("attention_mask") is not None), with_kwargs=True)
    try:
        for kind in ("rm", "kl", "mse"):
            _grad(setup, kind, RNA(mode="target", layer=LAYER, schedule=NoiseSchedule(nu=0.1)), 0)
    finally:
        handle.remove()
    assert seen == [True, True, True]


def test_noise_per_sample_does_not_depend_on_batch_split_or_padding() -> None:
    """A sample's noise comes from (seed, step, its index) at its real tokens: the same in a batch of 4
    padded to 9 tokens as in a batch of 2 padded to 5 (what 2 processes or 2 micro-batches see)."""
    from rna_theory.noise import NoiseSchedule
    from rna_train.rna import RNA

    rna = RNA(mode="target", layer=0, schedule=NoiseSchedule(0.5), seed=3, rank=0)
    lengths, index = [3, 9, 5, 2], torch.tensor([7, 2, 11, 4])
    mask = torch.zeros(4, 9)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    whole = rna.add_noise(torch.zeros(4, 9, 6), mask, 5, None, index)
    halves = [RNA(mode="target", layer=0, schedule=NoiseSchedule(0.5), seed=3, rank=1)
              .add_noise(torch.zeros(2, 9 if h == 0 else 5, 6), mask[2 * h:2 * h + 2, :9 if h == 0 else 5], 5, None,
                         index[2 * h:2 * h + 2]) for h in (0, 1)]
    for row, n in enumerate(lengths):
        part = halves[row // 2][row % 2]
        assert torch.equal(whole[row, :n], part[:n])
        assert torch.count_nonzero(whole[row, n:]) == 0 and torch.count_nonzero(whole[row, :n]) == n * 6
    other_step = rna.add_noise(torch.zeros(4, 9, 6), mask, 6, None, index)
    assert not torch.equal(other_step, whole)
