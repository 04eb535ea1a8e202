"""Trackers: TensorBoard event files that tensorboard's own reader parses, equal to metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import train_helpers as helpers
import yaml

from rna_theory.errors import RNAError
from rna_train import tracking
from rna_train.config import load_config
from rna_train.trainer import train


def _config(tmp_path: Path, assets: dict[str, Path], tracker: str):
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", steps=4, tracker=tracker,
                             lr_schedule="linear")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "c.yaml")


def test_tensorboard_events_hold_every_step(assets: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(*_config(tmp_path, assets, "tensorboard"))
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "forget", "retain", "lr", "nu"} <= tags
    for tag in ("loss", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in logged] == [r["step"] for r in rows]
        assert [v for _, v in logged] == pytest.approx([r[tag] for r in rows], rel=1e-6)


def test_auto_is_tensorboard_when_installed_and_none_writes_nothing(assets: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "_installed", lambda module: module == "tensorboard")
    assert tracking.resolve("auto") == "tensorboard"
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    assert tracking.resolve("auto") is None
    monkeypatch.undo()
    train(*_config(tmp_path, assets, "none"))
    assert not (tmp_path / "out" / "tensorboard").exists()


def test_missing_tracker_package_is_refused_before_anything_is_written(assets: dict[str, Path], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    with pytest.raises(RNAError, match="needs the wandb package") as info:
        train(*_config(tmp_path, assets, "wandb"))
    assert info.value.where == "train.tracker" and "pip install wandb" in info.value.fix
    assert not (tmp_path / "out").exists()


def test_hyperparameters_are_flat_scalars() -> None:
    flat = tracking.hyperparameters({"train": {"lr": 0.1, "betas": [0.9, 0.99], "x": None}, "seed": 3})
    assert flat == {"train.lr": 0.1, "train.betas": "[0.9, 0.99]", "train.x": "null", "seed": 3}
