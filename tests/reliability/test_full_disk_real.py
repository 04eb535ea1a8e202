"""A real full disk (a small tmpfs) during a run: one line, exit 2, no temporary files left, no DONE
(issue 14). Skipped where the machine does not let the test mount a tmpfs (needs root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import train_helpers as helpers
import yaml

from rna_train.cli import main


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("checkpoint_every", [2, 0])  # fails in a checkpoint, or in the final save
def test_a_real_full_disk(checkpoint_every: int, small_disk: Path, tmp_path: Path, assets: dict[str, Path],
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = small_disk / "run"
    raw = helpers.run_config(assets["tokenizer"], assets, out, steps=6, checkpoint_every=checkpoint_every)
    raw["train"]["save_model"] = True
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["unlearn", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rna ")]  # besides progress bars
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in err
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name == "DONE"]
    assert leftovers == []
