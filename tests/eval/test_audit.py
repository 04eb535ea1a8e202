"""Latent audit: offset alignment, the layer convention, audit.json and the tuner's npz contract."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from eval_helpers import rna

from rna_theory.errors import RNAError
from rna_train.eval.audit import align_offsets


@pytest.mark.parametrize(("clean", "perturbed", "expected"), [
    ([1, 2, 3, 4], [1, 2, 9, 9, 3, 4], (2, 2)),      # insertion: 2 before, 2 after (shift 2)
    ([1, 2, 3, 4], [1, 9, 3, 4], (1, 2)),            # substitution of one token
    ([1, 2, 3], [9, 1, 2, 3], (0, 3)),               # insertion at the start
    ([1, 2, 3], [1, 2, 3, 9], (3, 0)),               # insertion at the end
    ([1, 1, 1], [1, 1, 1, 1], (3, 0)),               # suffix never overlaps the prefix
])
def test_align_offsets(clean, perturbed, expected):
    assert align_offsets(clean, perturbed) == expected


def test_layer_output_is_hidden_states_plus_one(llama_dir):
    import torch

    from rna_train.eval.loading import load_for_eval
    from rna_train.models import layer_output

    model, tok = load_for_eval(str(llama_dir), "fp32", "cpu")
    ids = torch.tensor([tok("Question: What is two plus two?\nAnswer:")["input_ids"]])
    mask = torch.ones_like(ids)
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert torch.allclose(layer_output(model, 0, ids, mask), hidden[1], atol=1e-6)


@pytest.fixture(scope="module")
def audit_dir(llama_dir, probe_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    assert rna("audit", "--model", str(llama_dir), "--probe", str(probe_file), "--layer", "1",
               "--keywords", "bio", "control", "--nu", "0.05", "--out", str(out)) == 0
    return out


def test_audit_writes_estimates_and_predictions(audit_dir):
    audit = json.loads((audit_dir / "audit.json").read_text())
    assert audit["format"] == "rna-audit/1" and audit["layer"] == 1 and audit["dim"] == 32
    assert set(audit["keywords"]) == {"bio", "control"}
    for entry in audit["keywords"].values():
        check = entry["alignment_check"]
        assert check["prefix_max_abs_diff"] < 1e-5  # causal: states before the keyword are unchanged
        assert check["suffix_tokens"] > 0
        for alignment in ("offset", "last", "mean"):
            est = entry["estimators"][alignment]
            assert est["eta"] > 0 and len(est["spectrum"]) > 0 and est["effective_rank"] > 0
            assert est["robust_eta"] > 0 and 0 < est["top1pct_variance_share"] <= 1
            assert est["gaussianity"] is not None and "rejected" in est["gaussianity"]
        assert entry["estimators"]["last"]["n"] == 12
        assert 0 <= entry["measured"]["unchanged"]["rate"] <= 1
        predicted = entry["predicted"]
        assert predicted["noise"]["nu"] == 0.05 and predicted["noise"]["source"] == "--nu"
        assert 0 <= predicted["at_nu"]["certified"] <= predicted["at_nu"]["first_order"] <= 1
        assert len(predicted["curve"]) > 3
        assert "rows" in entry["tuner"] or "error" in entry["tuner"]


def test_npz_follows_the_tuner_contract(audit_dir):
    from rna_theory.tuner import load_latents, tune_from_file

    with np.load(audit_dir / "latents.npz", allow_pickle=False) as data:
        assert data["clean"].dtype == np.float64 and data["clean"].shape == data["perturbed"].shape
        assert data["clean"].shape[1] == 32
        assert data["margins"].shape == (12,) and data["margins"].dtype == np.float64
        assert data["rms"].shape == () and float(data["rms"]) > 0
        meta = json.loads(str(data["meta"]))
    assert meta["layer"] == 1 and meta["keyword_kind"] == "bio" and meta["alignment"] == "offset"
    assert (audit_dir / "latents-control.npz").is_file()
    assert set(load_latents(audit_dir / "latents.npz")) >= {"clean", "perturbed", "margins"}
    result = tune_from_file(audit_dir / "latents.npz", target=0.9)
    assert result.rows and json.dumps(result.to_dict())


@pytest.mark.skipif(importlib.util.find_spec("rna_theory.commands") is None
                    or importlib.util.find_spec("rna_theory.commands.tune") is None,
                    reason="rna tune (rna_theory.commands.tune) has not landed yet")
def test_rna_tune_reads_the_audit_npz(audit_dir, tmp_path, capsys):
    from rna_train.cli import main

    assert main(["tune", "--latents", str(audit_dir / "latents.npz")]) == 0


def test_audit_rejects_bad_layer(llama_dir, probe_file, tmp_path):
    with pytest.raises(RNAError, match="layer"):
        rna("audit", "--model", str(llama_dir), "--probe", str(probe_file), "--layer", "2",
            "--out", str(tmp_path))


def test_max_rows_caps_estimates_and_npz_alike(llama_dir, probe_file, tmp_path):
    assert rna("audit", "--model", str(llama_dir), "--probe", str(probe_file), "--layer", "0",
               "--keywords", "cyber", "--max-rows", "20", "--batch-size", "5", "--out", str(tmp_path)) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    est = audit["keywords"]["cyber"]["estimators"]
    assert est["offset"]["n"] == 20 and est["last"]["n"] == 12
    with np.load(tmp_path / "latents-cyber.npz") as data:
        assert data["clean"].shape == (20, 32)
        from rna_theory.estimators import assumption1

        assert assumption1(data["clean"], data["perturbed"]).eta == pytest.approx(est["offset"]["eta"])
