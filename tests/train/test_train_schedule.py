"""Learning-rate schedules with warm-up (also across --resume) and gradient checkpointing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_theory.errors import RNAError
from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.trainer import train


@pytest.fixture(scope="module")
def tiny(assets: dict[str, Path]) -> tuple[torch.nn.Module, object]:
    return load_model(from_config=helpers.TINY["llama"], tokenizer=str(assets["tokenizer"]), seed=0)


def _config(folder: Path, assets: dict[str, Path], method: dict | None = None, rna: dict | None = None,
            **train_opts: object):
    folder.mkdir(parents=True, exist_ok=True)
    raw = helpers.run_config(assets["tokenizer"], assets, folder / "out", method=method or {"name": "rmu"},
                             rna=rna, **{"steps": 6, "lr": 1e-2, **train_opts})
    (folder / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(folder / "c.yaml")


def test_linear_warmup_then_decay_is_logged_per_step(assets: dict[str, Path], tiny: tuple, tmp_path: Path) -> None:
    model, tok = tiny
    cfg, options = _config(tmp_path, assets, lr_schedule="linear", warmup_steps=2)
    result = train(cfg, options, model_and_tokenizer=(copy.deepcopy(model), tok))
    # transformers' linear schedule: s / warmup during warm-up, then (steps - s) / (steps - warmup)
    expected = [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
    assert [r["lr"] for r in result.metrics] == pytest.approx([1e-2 * f for f in expected], rel=1e-12)


def test_constant_with_warmup_and_the_default(assets: dict[str, Path], tiny: tuple, tmp_path: Path) -> None:
    model, tok = tiny
    cfg, options = _config(tmp_path / "w", assets, warmup_steps=3)
    warm = train(cfg, options, model_and_tokenizer=(copy.deepcopy(model), tok))
    assert [r["lr"] for r in warm.metrics] == pytest.approx([0.0, 1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2, 1e-2])
    cfg, options = _config(tmp_path / "c", assets)
    assert [r["lr"] for r in train(cfg, options, model_and_tokenizer=(copy.deepcopy(model), tok)).metrics] == [1e-2] * 6


def test_schedule_resumes_where_it_stopped(assets: dict[str, Path], tiny: tuple, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from rna_train import trainer

    model, tok = tiny
    opts = {"lr_schedule": "cosine", "warmup_steps": 1, "checkpoint_every": 2}
    whole = train(*_config(tmp_path / "a", assets, **opts), model_and_tokenizer=(copy.deepcopy(model), tok))
    save = trainer._save_periodic

    def interrupt_after_step_3(run: object, step: int) -> None:
        save(run, step)
        if step + 1 == 3:
            raise KeyboardInterrupt

    cfg, options = _config(tmp_path / "b", assets, **opts)
    monkeypatch.setattr(trainer, "_save_periodic", interrupt_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, options, model_and_tokenizer=(copy.deepcopy(model), tok))
    monkeypatch.undo()
    resumed = train(cfg, options, resume=True, model_and_tokenizer=(copy.deepcopy(model), tok))
    assert [r["lr"] for r in resumed.metrics] == [r["lr"] for r in whole.metrics]
    helpers.assert_same_run(whole, resumed)
    with pytest.raises(RNAError, match="lr_schedule"):
        cfg2, options2 = _config(tmp_path / "b", assets, **{**opts, "lr_schedule": "linear"})
        (tmp_path / "b" / "out" / "DONE").unlink()
        train(cfg2, options2, resume=True, model_and_tokenizer=(copy.deepcopy(model), tok))


@pytest.mark.parametrize(("method", "rna"), [({"name": "npo", "retain_loss": "kl"}, {"mode": "target", "noise": 0.05}),
                                             ({"name": "rmu"}, {"mode": "input", "noise": 0.05})])
def test_gradient_checkpointing_recomputes_and_changes_nothing(method: dict, rna: dict, assets: dict[str, Path],
                                                               tiny: tuple, tmp_path: Path) -> None:
    model, tok = tiny
    runs = {}
    for flag in (False, True):
        copy_ = copy.deepcopy(model)
        calls: list[bool] = []
        mlp = copy_.model.layers[2].mlp
        forward = mlp.forward

        def counted(*args: object, _forward=forward, _calls=calls, **kwargs: object) -> torch.Tensor:
            _calls.append(torch.is_grad_enabled())  # (torch's recompute runs no module hooks: count calls)
            return _forward(*args, **kwargs)

        mlp.forward = counted
        cfg, options = _config(tmp_path / str(flag), assets, method, rna, steps=3, gradient_checkpointing=flag,
                               reference_cache=False)
        runs[flag] = (train(cfg, options, model_and_tokenizer=(copy_, tok)), calls.count(True))
    (plain, plain_calls), (ckpt, ckpt_calls) = runs[False], runs[True]
    assert ckpt_calls > plain_calls  # the trainable layer's forward ran again in the backward pass
    for a, b in zip(plain.metrics, ckpt.metrics, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-9)
    params = dict(ckpt.model.named_parameters())
    for name, value in plain.model.named_parameters():
        torch.testing.assert_close(value, params[name], rtol=1e-5, atol=1e-7)


def test_warmup_longer_than_the_run_is_refused(assets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RNAError, match="warmup_steps 9 exceeds") as info:
        _config(tmp_path, assets, warmup_steps=9)
    assert info.value.where == "train.warmup_steps"
