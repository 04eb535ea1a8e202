"""SIGKILL at chosen points inside the checkpoint writer, then ``--resume``.

A small driver patches the writer in a child process so the kill lands exactly (a) after the first
file of a checkpoint is written and (b) after every file is written and fsynced but before the
rename. Random-delay kills (``test_resume_and_safety.py``) hit these points only by chance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_train import checkpoint
from rna_train.config import load_config
from rna_train.trainer import DONE, train

REPO = Path(__file__).resolve().parents[2]

DRIVER = '''
import os, signal, sys
from rna_train import checkpoint, cli

mode, at = sys.argv[1], int(sys.argv[2])
marker = f".step-{at:07d}.tmp"
save_file, write = checkpoint.save_file, checkpoint._write


def partial(tensors, path, *args, **kwargs):
    save_file(tensors, path, *args, **kwargs)
    if marker in path:
        os.kill(os.getpid(), signal.SIGKILL)


def before_rename(tmp, weights, tensors, state):
    write(tmp, weights, tensors, state)
    if state["step"] == at:
        os.kill(os.getpid(), signal.SIGKILL)


if mode == "partial":
    checkpoint.save_file = partial
else:
    checkpoint._write = before_rename
sys.exit(cli.main(sys.argv[3:]))
'''


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


def _config(tmp_path: Path, assets: dict[str, Path], out: Path, name: str) -> Path:
    raw = helpers.run_config(assets["tokenizer"], assets, out, method={"name": "rmu", "alpha": 10.0},
                             rna={"mode": "target", "noise": 0.05}, topics=2, steps=8, checkpoint_every=1,
                             keep_checkpoints=2, log_every=1000)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_kill_inside_the_writer_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path, assets):
    out = tmp_path / "killed"
    config = _config(tmp_path, assets, out, "k.yaml")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    ckpts = out / "checkpoints"
    unlearn = ["unlearn", "--config", str(config), "--resume"]

    # (a) killed after the first file of checkpoint 3: a partial temp folder, step 2 untouched.
    res = _run([sys.executable, str(driver), "partial", "3", *unlearn])
    assert res.returncode == -9, res.stderr
    tmp3 = ckpts / ".step-0000003.tmp"
    assert sorted(p.name for p in tmp3.iterdir()) == ["trainable.safetensors"]
    assert [p.name for p in checkpoint.list_checkpoints(ckpts)] == ["step-0000001", "step-0000002"]
    for f in (ckpts / "step-0000002").glob("*.safetensors"):
        load_file(str(f))
    assert not (out / DONE).exists() and not (out / "model").exists()

    # A leftover from another step (e.g. an earlier run with a different checkpoint_every).
    stale = ckpts / ".step-0000099.tmp"
    stale.mkdir()
    (stale / "state.json").write_text("{not json")

    # (b) resumed from step 2, then killed with checkpoint 5 complete but not yet renamed.
    res = _run([sys.executable, str(driver), "before_rename", "5", *unlearn])
    assert res.returncode == -9, res.stderr
    assert not tmp3.exists() and not stale.exists()  # stale temp folders are removed, never loaded
    tmp5 = ckpts / ".step-0000005.tmp"
    assert sorted(p.name for p in tmp5.iterdir()) == ["optimizer.safetensors", "state.json",
                                                      "trainable.safetensors"]
    assert checkpoint.list_checkpoints(ckpts)[-1].name == "step-0000004"  # the temp folder is never loaded

    # (c) a plain resume finishes; no temp folder survives; weights equal an uninterrupted run's.
    res = _run([sys.executable, "-m", "rna_train.cli", *unlearn])
    assert res.returncode == 0, res.stderr
    assert (out / DONE).exists() and not list(ckpts.glob(".step-*.tmp"))

    straight = tmp_path / "straight"
    cfg, options = load_config(_config(tmp_path, assets, straight, "s.yaml"))
    train(cfg, options)
    a = load_file(str(out / "trainable.safetensors"))
    b = load_file(str(straight / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
