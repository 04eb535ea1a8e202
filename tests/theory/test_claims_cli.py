"""`rna theory check` and `rna tune` end to end: coverage, schema, findings, and argument errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rna_train.cli import main


@pytest.fixture(scope="module")
def quick_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "check.json"
    assert main(["theory", "check", "--quick", "--json", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_covers_c1_to_c7_on_settings_1_to_3(quick_doc):
    assert quick_doc["schema"] == "rna.theory.check/1"
    covered = {(r["claim"], r["setting"]) for r in quick_doc["results"]}
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
        for setting in (1, 2, 3):
            assert (claim, setting) in covered, (claim, setting)
    for r in quick_doc["results"]:
        assert r["verdict"] in {"holds", "approximate", "violated", "inconclusive"}
        assert r["measured"] is not None or r["verdict"] == "inconclusive"
        if r["ci"] is not None:
            assert r["ci"][0] <= r["ci"][1]
    assert sum(quick_doc["summary"].values()) == len(quick_doc["results"])


def test_c2_exhibits_a_violation(quick_doc):
    rows = [r for r in quick_doc["results"] if r["claim"] == "C2" and r["verdict"] == "violated"]
    concave = [r for r in rows if "most concave" in r["quantity"]]
    assert concave and concave[0]["ci"][1] < 0  # noise confidently lowers the expected loss


def test_rigorous_bounds_hold(quick_doc):
    rigorous = [r for r in quick_doc["results"] if r["claim"] in ("C4", "C6") and r["verdict"] != "approximate"]
    assert rigorous and all(r["verdict"] == "holds" for r in rigorous)


def test_claim_filter_and_table(capsys):
    assert main(["theory", "check", "--quick", "--claims", "C2", "--settings", "1"]) == 0
    out = capsys.readouterr().out
    assert "C2" in out and "C6" not in out.split("-" * 20)[-1].split("\n\n")[0] and "checks in" in out


@pytest.mark.parametrize("argv, where", [
    (["theory", "check", "--claims", "C9"], "--claims"),
    (["theory", "check", "--settings", "x"], "--settings"),
    (["theory", "check", "--settings", "7"], "--settings"),
    (["tune", "--eta", "-1", "--dim", "4", "--margin", "1"], "eta"),
    (["tune", "--eta", "nan", "--dim", "4", "--margin", "1"], "eta"),
    (["tune", "--eta", "0.1", "--dim", "0", "--margin", "1"], "dim"),
    (["tune", "--eta", "0.1", "--dim", "4"], "margins"),
    (["tune", "--eta", "0.1", "--dim", "4", "--margin", "1", "--nus", "0.1,-2"], "--nus"),
    (["tune", "--eta", "0.1", "--dim", "4", "--margin", "1", "--target", "2"], "target"),
])
def test_invalid_arguments_exit_2(argv, where, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err and "fix:" in err


def test_tune_with_bad_latent_files(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    assert main(["tune", "--latents", str(bad)]) == 2
    np.savez(tmp_path / "mismatch.npz", clean=np.zeros((4, 3)), perturbed=np.zeros((5, 3)), margins=np.ones(2))
    assert main(["tune", "--latents", str(tmp_path / "mismatch.npz")]) == 2
    np.savez(tmp_path / "empty.npz", clean=np.zeros((0, 3)), perturbed=np.zeros((0, 3)), margins=np.ones(2))
    assert main(["tune", "--latents", str(tmp_path / "empty.npz")]) == 2
    err = capsys.readouterr().err
    assert "npz" in err and "paired" in err and "row" in err


def test_tune_cli_json_and_plot(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((100, 8))
    np.savez(tmp_path / "lat.npz", clean=clean, perturbed=clean + 0.1 * rng.standard_normal((100, 8)),
             margins=np.full(5, 2.0))
    assert main(["tune", "--latents", str(tmp_path / "lat.npz"), "--json", "--plot", str(tmp_path / "p.png"),
                 "--target", "0.9"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["recommended_nu"] > 0 and doc["dim"] == 8
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_console_script_exit_status():
    res = subprocess.run([sys.executable, "-m", "rna_train.cli", "tune", "--eta", "-1", "--dim", "2", "--margin", "1"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "error" in res.stderr
