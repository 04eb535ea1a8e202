"""Each bad input is one clear RNAError before any training step, leaving no finished-looking output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import train_helpers as helpers
import yaml

from rna_theory.errors import RNAError
from rna_train.config import load_config, parse_override
from rna_train.trainer import DONE, train


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _fails(tmp_path: Path, assets: dict[str, Path], overrides: list[str],
           edit: Callable[[dict[str, Any]], None] | None = None) -> RNAError:
    """Run config + overrides through validation and training; return the RNAError raised."""
    out = tmp_path / "out"
    raw = helpers.run_config(assets["tokenizer"], assets, out)
    if edit is not None:
        edit(raw)
    with pytest.raises(RNAError) as info:
        cfg, options = load_config(_write(tmp_path, raw), overrides)
        train(cfg, options)
    assert not out.exists() or not (out / DONE).exists()
    assert not out.exists(), "the output folder must not be created before validation passes"
    return info.value


@pytest.mark.parametrize(("overrides", "where", "hint"), [
    (["train.lrr=1e-4"], "train.lrr", "did you mean 'lr'"),
    (["train.steps=abc"], "train.steps", "whole number"),
    (["train.lr=-1"], "train.lr", "> 0"),
    (["rna.mode=targett"], "rna.mode", "did you mean 'target'"),
    (["method.name=rmuu"], "method.name", "did you mean 'rmu'"),
    (["method.steering=3"], "method.steering", "did you mean 'steering_coef'"),
    (["method.layer=10"], "method.layer", "0..3"),
    (["rna.mode=target", "rna.noise=-0.1"], "rna.noise.nu", "nu >= 0"),
    (["rna.mode=target", "rna.noise={nu: -0.1, kind: constant}"], "rna.noise.nu", "nu >= 0"),
    (["rna.mode=input", "rna.layer=3"], "rna.layer", "rna.layer <= 2"),
    (["rna.mode=target", "method.retain_loss=nll", "rna.noise=0.1"], "rna.mode", "input"),
    (["rna.mode=target", "rna.noise=auto"], "rna.auto.latents", "rna.auto.latents"),
    (["rna.mode=target", "rna.noise=auto", "rna.auto.latents=/nonexistent.npz"], "rna.auto.latents", ""),
    (["model.trainable.patterns=[mlp.nothing]"], "model.trainable.patterns", "mlp.down_proj"),
    (["data.forget.0.text_field=content"], "bio.jsonl:1", "text_field"),
    (["data.min_length=30"], "data.forget.0.path", "min_length"),
    (["train.batch_size=3", "train.grad_accum=2"], "train.batch_size", "multiple"),
    (["model.dtype=fp8"], "model.dtype", "fp32"),
    (["data.max_length=500"], "data.max_length", "position window 128"),
])
def test_bad_config_values(overrides: list[str], where: str, hint: str, tmp_path: Path,
                           assets: dict[str, Path]) -> None:
    err = _fails(tmp_path, assets, overrides)
    assert err.where is not None and where in err.where, str(err)
    assert hint in str(err)


def test_malformed_jsonl_names_file_and_line(tmp_path: Path, assets: dict[str, Path]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "virus protein"}\n{"text": "cell gene"\n')
    err = _fails(tmp_path, assets, [f"data.forget.0.path={bad}"])
    assert err.where == f"{bad}:2"


def test_empty_corpus(tmp_path: Path, assets: dict[str, Path]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    err = _fails(tmp_path, assets, [f"data.retain.path={empty}"])
    assert "empty" in err.what and err.where.startswith("data.retain")


def test_unknown_layout(tmp_path: Path, assets: dict[str, Path]) -> None:
    def bert(raw: dict[str, Any]) -> None:
        raw["model"]["from_config"] = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "intermediate_size": 64, "is_decoder": True}

    err = _fails(tmp_path, assets, [], bert)
    assert "unknown model layout 'bert'" in err.what and "LAYOUTS" in (err.fix or "")


def test_no_tokenizer_for_a_config_model(tmp_path: Path, assets: dict[str, Path]) -> None:
    err = _fails(tmp_path, assets, [], lambda raw: raw["model"].pop("tokenizer"))
    assert err.where == "model.tokenizer"


def test_no_forget_topic(tmp_path: Path, assets: dict[str, Path]) -> None:
    err = _fails(tmp_path, assets, ["data.forget=[]"])
    assert err.where == "data.forget"


def test_finished_run_is_not_overwritten(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = tmp_path / "out"
    path = _write(tmp_path, helpers.run_config(assets["tokenizer"], assets, out, steps=1))
    train(*load_config(path))
    assert (out / DONE).exists()
    with pytest.raises(RNAError, match="already finished"):
        train(*load_config(path))


def test_override_parsing() -> None:
    assert parse_override("train.lr=2e-5") == ("train.lr", 2e-5)
    assert parse_override("rna.mode=off") == ("rna.mode", "off")  # YAML 1.2: not a boolean
    assert parse_override("train.progress=false") == ("train.progress", False)
    assert parse_override("model.trainable.layers=[5, 6, 7]") == ("model.trainable.layers", [5, 6, 7])
    assert parse_override("rna.noise={nu: 0.03, relative_to: rms}") == ("rna.noise",
                                                                        {"nu": 0.03, "relative_to": "rms"})
    with pytest.raises(RNAError, match="no '='"):
        parse_override("train.lr")


def test_resume_refuses_a_changed_config(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = tmp_path / "out"
    raw = helpers.run_config(assets["tokenizer"], assets, out, steps=4, checkpoint_every=2)
    path = _write(tmp_path, raw)
    cfg, _ = load_config(path)
    (out / "checkpoints").mkdir(parents=True)
    from rna_train import config

    config.dump_yaml(cfg, out / "config.yaml")
    with pytest.raises(RNAError, match=r"train\.lr"):
        train(*load_config(path, ["train.lr=0.5"]), resume=True)
    train(*load_config(path, ["train.log_every=1"]), resume=True)  # harmless changes are fine
    assert (out / DONE).exists()


def test_rna_settings_a_method_cannot_honour_fail_at_load(tmp_path: Path, assets: dict[str, Path]) -> None:
    """No model is needed to know that noise after layer 3 cannot reach a layer-2 RM loss."""
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out")
    raw["model"] = {"name_or_path": str(tmp_path / "no-such-model")}  # never loaded
    path = _write(tmp_path, raw)
    for overrides, where in ((["rna.mode=input", "rna.layer=3", "method.layer=2"], "rna.layer"),
                             (["rna.mode=target", "method.retain_loss=nll"], "rna.mode")):
        with pytest.raises(RNAError) as info:
            load_config(path, overrides)
        assert info.value.where == where


def test_nu_auto_uses_the_tuner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from rna_train.config import NoiseAutoConfig, parse_noise

    latents = tmp_path / "latents.npz"
    latents.write_bytes(b"")
    auto = NoiseAutoConfig(latents=str(latents), target=0.9)
    calls: list[tuple[str, float]] = []

    def fake(path: str, target: float, criterion: str) -> object:
        calls.append((str(path), target))
        return types.SimpleNamespace(recommended_nu=0.02, recommended_nu_relative=0.1, rms=0.2, dim=32, note="ok")

    monkeypatch.setattr("rna_theory.tuner.tune_from_file", fake)
    assert parse_noise("auto", auto).nu == 0.02
    rel = parse_noise({"nu": "auto", "relative_to": "rms"}, auto)
    assert rel.nu == 0.1 and rel.relative_to == "rms"
    assert calls == [(str(latents), 0.9)] * 2
    assert parse_noise("auto", auto, active=False).nu == 0.0 and len(calls) == 2  # RNA off: nothing tuned
    monkeypatch.setattr("rna_theory.tuner.tune_from_file",
                        lambda path, target, criterion: types.SimpleNamespace(recommended_nu=None, note="n"))
    with pytest.raises(RNAError, match="no noise scale meets"):
        parse_noise("auto", NoiseAutoConfig(latents=str(latents), target=0.99))


def test_nu_auto_guard_rails(tmp_path: Path, assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A tuned nu far above the activation scale is refused; latents of another width are refused; the
    choice and the tuner's reason are recorded in the resolved config."""
    import types

    latents = tmp_path / "latents.npz"
    latents.write_bytes(b"")
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out")
    raw["rna"] = {"mode": "target", "noise": "auto", "auto": {"latents": str(latents)}}
    path = _write(tmp_path, raw)
    hidden = raw["model"]["from_config"]["hidden_size"]

    def tuner(nu: float, dim: int):
        return lambda path, target, criterion: types.SimpleNamespace(
            recommended_nu=nu, recommended_nu_relative=nu / 2.0, rms=2.0, dim=dim, note=f"{criterion} ok")

    monkeypatch.setattr("rna_theory.tuner.tune_from_file", tuner(112.0, hidden))  # 56x the RMS
    with pytest.raises(RNAError, match=r"56\.0x the layer's activation RMS") as info:
        load_config(path)
    assert info.value.where == "rna.noise"
    monkeypatch.setattr("rna_theory.tuner.tune_from_file", tuner(0.5, hidden + 1))
    with pytest.raises(RNAError, match="dimension") as info:
        load_config(path)
    assert info.value.where == "rna.auto.latents"
    monkeypatch.setattr("rna_theory.tuner.tune_from_file", tuner(0.5, hidden))
    cfg = load_config(path)[0]
    assert cfg.rna.noise.nu == 0.5 and cfg.rna.auto.chosen["nu_over_rms"] == 0.25
    assert cfg.rna.auto.chosen["criterion"] == "first-order" and cfg.rna.auto.chosen["note"] == "first-order ok"


def test_noise_is_a_schedule_at_load_whatever_its_form(tmp_path: Path, assets: dict[str, Path]) -> None:
    """``rna.noise`` as a number, a mapping, or a number refined by ``rna.noise.nu=`` (the README's
    override of a config that writes a number) all load as a NoiseSchedule; a bad value fails at
    load even with RNA off; the resolved config reloads to the same schedule."""
    from rna_theory.noise import NoiseSchedule
    from rna_train import config

    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out")
    raw["rna"] = {"mode": "target", "noise": 0.05}
    path = _write(tmp_path, raw)
    assert load_config(path)[0].rna.noise == NoiseSchedule(0.05)
    cfg = load_config(path, ["rna.noise.nu=0.03", "rna.noise.relative_to=rms"])[0]
    assert cfg.rna.noise == NoiseSchedule(0.03, relative_to="rms")
    cfg = load_config(path, ["rna.noise={nu: 0.1, kind: step, milestones: [2, 3]}"])[0]
    assert cfg.rna.noise.milestones == (2, 3)
    config.dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml")[0].rna.noise == cfg.rna.noise
    with pytest.raises(RNAError) as info:
        load_config(path, ["rna.mode=off", "rna.noise.nu=-1"])
    assert info.value.where == "rna.noise.nu"
    with pytest.raises(RNAError) as info:
        load_config(path, ["rna.noise.nux=1"])
    assert info.value.where == "rna.noise" and "nux" in str(info.value)


def test_overrides_on_both_sides_of_resume(tmp_path: Path, assets: dict[str, Path]) -> None:
    """`rna unlearn --config C train.steps=2 --resume output_dir=D`: both overrides apply."""
    from rna_train.cli import main

    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "ignored")
    path = _write(tmp_path, raw)
    out = tmp_path / "run"
    assert main(["unlearn", "--config", str(path), "train.steps=2", "--resume", f"output_dir={out}"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        main(["unlearn", "--config", str(path), "--resume", "--bogus"])


def test_ctrl_c_says_how_to_resume(tmp_path: Path, assets: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rna_train import trainer
    from rna_train.cli import main

    out = tmp_path / "run"
    path = _write(tmp_path, helpers.run_config(assets["tokenizer"], assets, out))

    def interrupted(*args: object, **kwargs: object) -> None:
        (out / "checkpoints" / "step-0000002").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    assert main(["unlearn", "--config", str(path), "train.steps=4"]) == 130
    err = capsys.readouterr().err
    assert "step-0000002" in err and f"rna unlearn --config {path} train.steps=4 --resume" in err
