"""Shipped recipes validate; the tiny ones run; topics, precision and CLI behave as documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train.cli import main
from rna_train.config import load_config
from rna_train.methods.rmu import RMU
from rna_train.methods.rsv import RSV
from rna_train.trainer import DONE, prepare, train

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "experiments" / "configs").glob("*.yaml"))


def test_every_method_has_a_zephyr_recipe_with_and_without_rna() -> None:
    names = {p.stem for p in RECIPES}
    for method in ("rmu", "adaptive_rmu", "rsv", "npo", "dpo", "simnpo"):
        assert {f"zephyr_{method}", f"zephyr_{method}_rna"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates(path: Path) -> None:
    cfg, options = load_config(path)
    if path.stem.startswith("zephyr"):
        assert cfg.model.name_or_path == "HuggingFaceH4/zephyr-7b-beta"
        assert (cfg.rna.mode == "target") == path.stem.endswith("_rna")
        assert cfg.model.trainable.layers == [5, 6, 7] and options.layer == 7


@pytest.mark.parametrize("stem", ["tiny_llama_rmu", "tiny_gpt2_npo"])
def test_tiny_recipe_runs_through_the_cli(stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    code = main(["unlearn", "--config", f"experiments/configs/{stem}.yaml", f"output_dir={out}",
                 "train.steps=3", "train.progress=false"])
    assert code == 0 and (out / DONE).exists() and (out / "model" / "config.json").exists()
    import json

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # linear schedule 0.05 -> 0 over the run's 3 steps (with_total_steps filled from train.steps)
    assert [r["nu"] for r in rows] == pytest.approx([0.05, 0.05 * 2 / 3, 0.05 / 3])


def test_cli_error_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    code = main(["unlearn", "--config", "experiments/configs/tiny_llama_rmu.yaml", f"output_dir={out}",
                 "method.name=rmv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "method.name" in err and not out.exists()


def test_methods_command_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    from rna_train.commands import methods

    assert methods.run(argparse.Namespace(json=True)) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["rmu"]["options"]["steering_coef"]["default"] == 6.5
    assert data["npo"]["options"]["retain_loss"]["default"] == "kl"


def test_topics_have_own_vectors_and_coefficients(tmp_path: Path, assets: dict[str, Path]) -> None:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "o", topics=2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg, options = load_config(path)
    prep = prepare(cfg, options)
    method = prep.method
    assert isinstance(method, RMU)
    u0, u1 = method.directions
    assert not torch.equal(u0, u1) and torch.all(u0 >= 0)
    assert float(u0.norm()) == pytest.approx(1.0)
    assert method.steering_coef(0, 0.0) == 6.5 and method.steering_coef(1, 0.0) == 7.5
    raw["method"] = {"name": "rsv", "layer": 2}
    path.write_text(yaml.safe_dump(raw))
    rsv = prepare(*load_config(path)).method
    assert isinstance(rsv, RSV) and (rsv.directions[0] < 0).any()  # Gaussian, not uniform


@pytest.mark.parametrize(("dtype", "precision"), [("bf16", "no"), ("fp32", "bf16")])
def test_bf16_weights_and_autocast(dtype: str, precision: str, tmp_path: Path,
                                   assets: dict[str, Path]) -> None:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "o",
                             method={"name": "npo", "alpha": 1.0},
                             rna={"mode": "target", "noise": {"nu": 0.1, "relative_to": "rms"}},
                             mixed_precision=precision)
    raw["model"]["dtype"] = dtype
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = train(*load_config(path))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.metrics)
