"""Everyday faults through the CLI: one line, exit 2, no traceback, nothing half-written (issue 14)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rna_train.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and err[0].startswith("rna ")
    for needle in needles:
        assert needle in err[0]


def test_truncated_weights_are_one_line(llama_dir: Path, probe_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(llama_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:300])
    assert main(["eval", "--model", str(broken), "--probe", str(probe_file), "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, "truncated or corrupt")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("command", ["eval", "audit", "report"])
def test_an_output_path_that_is_a_file_is_refused_before_loading(command: str, llama_dir: Path, probe_file: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import rna_train.eval.loading as loading

    monkeypatch.setattr(loading, "load_for_eval", lambda *a, **k: pytest.fail("the model was loaded"))
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    argv = {"eval": ["eval", "--model", str(llama_dir), "--probe", str(probe_file)],
            "audit": ["audit", "--model", str(llama_dir), "--probe", str(probe_file), "--layer", "0"],
            "report": ["report", str(tmp_path)]}[command]
    assert main([*argv, "--out", str(blocker)]) == 2
    _one_line_error(capsys, "a file is in the way")
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_output_folder_is_refused(llama_dir: Path, probe_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["eval", "--model", str(llama_dir), "--probe", str(probe_file), "--out", str(locked / "e")]) == 2
        _one_line_error(capsys, "cannot be created")
    finally:
        locked.chmod(0o700)


def test_a_full_disk_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real ENOSPC (as the OS raises it) from any subcommand becomes one line naming the file and the fix."""
    import errno

    import rna_train.commands.methods as methods

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/model.safetensors")

    monkeypatch.setattr(methods, "run", full)
    assert main(["methods"]) == 2
    _one_line_error(capsys, "No space left on device", "/runs/x/model.safetensors", "free disk space")


@pytest.mark.parametrize("path", ["/no/such/model", "./no-such-model", "runs/x/model"])
def test_a_missing_local_model_folder_is_named_as_such(path: str, probe_file: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", path, "--probe", str(probe_file)]) == 2
    _one_line_error(capsys, "folder not found", path)
