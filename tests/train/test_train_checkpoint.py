"""Checkpoints: atomic folders, pruning, exact round trip of weights and Adam state."""

from __future__ import annotations

from pathlib import Path

import torch

from rna_train import checkpoint


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer, list[str]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    names = ["0.weight", "1.bias"]
    params = dict(model.named_parameters())
    for n, p in params.items():
        p.requires_grad_(n in names)
    opt = torch.optim.AdamW([params[n] for n in names], lr=0.1)
    for _ in range(2):
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt, names


def test_round_trip_and_pruning(tmp_path: Path) -> None:
    model, opt, names = _model_and_optimizer()
    for step in (2, 4, 6):
        checkpoint.save(tmp_path, step, model, opt, names, {"seed": 1}, keep=2)
    (tmp_path / ".step-0000008.tmp").mkdir()  # an interrupted write is never listed
    found = checkpoint.list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step-0000004", "step-0000006"]
    other, other_opt, _ = _model_and_optimizer()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    other_opt.state.clear()
    meta = checkpoint.load(found[-1], other, other_opt, names)
    assert meta["step"] == 6 and meta["seed"] == 1
    for (n, a), b in zip(model.named_parameters(), other.parameters(), strict=True):
        if n in names:
            assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], other_opt.state_dict()["state"]
    for i in sa:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][key], sb[i][key])
