"""RMU at nu = 0 against an independent, straightforward implementation of the algorithm (issue 13,
item 11), written from its definition: two full models (updated and frozen), hidden states read from
``output_hidden_states``, forget MSE to c*u and retain MSE to the frozen states over real tokens, plain
AdamW. Shared with the trainer are only the data pipeline (tokenised corpora, batch order) and the
seeding protocol of u; the loss trajectories and final weights must agree to float64 rounding."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train.config import load_config
from rna_train.data import batch_indices, load_corpus, stream_id
from rna_train.models import load_model
from rna_train.rna import step_seed
from rna_train.trainer import train

LAYER, C, ALPHA, LR, STEPS, BATCH = 2, 6.5, 10.0, 1e-3, 5, 4


def _mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype)
    return (((hidden - target) ** 2).sum(-1) * m).sum() / (m.sum() * hidden.shape[-1])


def _straightforward_rmu(tokenizer: Path, corpora: dict[str, Path]) -> tuple[list[tuple[float, float]], dict]:
    model, tok = load_model(from_config=helpers.TINY["llama"], tokenizer=str(tokenizer), seed=0, dtype="fp64")
    model.eval()
    frozen = copy.deepcopy(model)
    names = [f"model.layers.{i}.mlp.down_proj.weight" for i in (LAYER - 2, LAYER - 1, LAYER)]
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([params[n] for n in names], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    d = model.config.hidden_size
    u = torch.rand(d, generator=torch.Generator().manual_seed(step_seed(0, 0, 0, salt=1000)))
    u = (u / u.norm()).double()  # drawn and normalised in float32, like every u of the protocol
    forget = load_corpus("bio", [str(corpora["bio"])], tok, max_length=32, min_length=2)
    retain = load_corpus("retain", [str(corpora["retain"])], tok, max_length=32, min_length=2)
    trajectory = []
    for step in range(STEPS):
        f = forget.batch(batch_indices(len(forget), BATCH, step, seed=0, stream=stream_id("bio")))
        r = retain.batch(batch_indices(len(retain), BATCH, step, seed=0, stream=stream_id("retain:retain")))
        h_f = model(**f, output_hidden_states=True).hidden_states[LAYER + 1]
        forget_loss = _mse(h_f, C * u, f["attention_mask"])
        h_r = model(**r, output_hidden_states=True).hidden_states[LAYER + 1]
        with torch.no_grad():
            h_r0 = frozen(**r, output_hidden_states=True).hidden_states[LAYER + 1]
        retain_loss = _mse(h_r, h_r0, r["attention_mask"])
        (forget_loss + ALPHA * retain_loss).backward()
        opt.step()
        opt.zero_grad()
        trajectory.append((float(forget_loss.detach()), float(retain_loss.detach())))
    return trajectory, {n: params[n].detach().clone() for n in names}


def test_trainer_rmu_equals_a_straightforward_implementation(tmp_path: Path, assets: dict[str, Path]) -> None:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", method={"alpha": ALPHA},
                             steps=STEPS, batch_size=BATCH, lr=LR)
    raw["model"]["dtype"] = "fp64"
    raw["data"]["forget"][0]["steering_coef"] = C
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    result = train(*load_config(tmp_path / "c.yaml"))
    want, weights = _straightforward_rmu(assets["tokenizer"], assets)
    got = [(row["forget"], row["retain"]) for row in result.metrics]
    assert len(got) == STEPS
    for (gf, gr), (wf, wr) in zip(got, want, strict=True):
        assert gf == pytest.approx(wf, rel=1e-9)
        assert gr == pytest.approx(wr, rel=1e-9, abs=1e-15)
    params = dict(result.model.named_parameters())
    for name, value in weights.items():
        torch.testing.assert_close(params[name], value, rtol=1e-9, atol=1e-12)
