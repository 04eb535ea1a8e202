"""Reading a training run's config.yaml for labels and the RNA noise std."""

from __future__ import annotations

import pytest

from rna_train.eval.runinfo import find_config, read_config, run_label, training_info


@pytest.mark.parametrize(("config", "nu", "relative", "label"), [
    ({"method": {"name": "npo"}, "rna": {"mode": "off"}}, 0.0, "absolute", "npo"),
    ({"method": {"name": "rmu"}, "rna": {"mode": "target", "noise": 0.03}}, 0.03, "absolute",
     "rmu +RNA(nu=0.03)"),
    ({"method": {"name": "rmu"}, "rna": {"mode": "target", "noise": {"nu": 0.1, "kind": "linear", "nu_end": 0.02,
                                                                       "relative_to": "rms"}}},
     0.02, "rms", "rmu +RNA(nu=linear 0.1->0.02 x rms)"),
    ({"method": {"name": "rsv"}, "rna": {"mode": "input", "noise": {"nu": 0.05, "kind": "step"}}}, 0.05,
     "absolute", "rsv +RNA-input(nu=step 0.05)"),
    ({"method": {"name": "rmu"}, "rna": {"mode": "target", "noise": "auto"}}, None, "absolute", "rmu +RNA(nu=auto)"),
    ({"method": {"name": "rmu"}, "rna": {"mode": "target", "noise": {"nu": 0.4, "kind": "constant"},
                                         "auto": {"chosen": {"nu": 0.4}}}}, 0.4, "absolute", "rmu +RNA(nu=0.4 auto)"),
    ({}, None, "absolute", "fallback"),
    ({"seed": 2, "method": {"name": "npo"}, "rna": {"mode": "off"}}, 0.0, "absolute", "npo seed 2"),
])
def test_training_info(config, nu, relative, label):
    info = training_info(config)
    assert info["nu"] == nu and info["relative_to"] == relative
    assert run_label(info, "fallback") == label


def test_read_and_find_config(tmp_path):
    assert read_config(tmp_path / "config.yaml") == {}
    (tmp_path / "config.yaml").write_text("method: [unclosed\n")
    assert read_config(tmp_path / "config.yaml") == {}
    (tmp_path / "config.yaml").write_text("method: {name: ga}\n")
    model = tmp_path / "model"
    model.mkdir()
    assert find_config(model) == tmp_path / "config.yaml"
    assert find_config(tmp_path / "nowhere" / "deeper") is None
