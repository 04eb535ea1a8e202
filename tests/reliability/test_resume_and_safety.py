"""Repeated SIGKILLs at random moments (checkpoint writes included), determinism, safe loading."""

from __future__ import annotations

import ast
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_theory import RNAError
from rna_train import checkpoint
from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.trainer import DONE, train

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


def _config(tmp_path: Path, assets: dict[str, Path], out: Path, name: str, **train_opts: object) -> Path:
    raw = helpers.run_config(assets["tokenizer"], assets, out, method={"name": "rmu", "alpha": 10.0},
                             rna={"mode": "target", "noise": 0.05}, topics=2, **train_opts)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_random_sigkills_then_resume_equal_an_uninterrupted_run(tmp_path, assets):
    """Kill the run at random moments until it finishes; checkpoints are written every step, so many
    kills land inside a checkpoint write. The final weights must equal an uninterrupted run's."""
    steps = 40
    killed = tmp_path / "killed"
    config = _config(tmp_path, assets, killed, "k.yaml", steps=steps, checkpoint_every=1, keep_checkpoints=2,
                     log_every=1000)
    cmd = [sys.executable, "-m", "rna_train.cli", "unlearn", "--config", str(config), "--resume"]
    rng = random.Random(7)
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until training has started (a metrics file exists), then kill after a random delay.
        deadline = time.monotonic() + 120
        while not (killed / "metrics.jsonl").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # Whatever the moment, every checkpoint with a final name is complete and readable.
        for ckpt in checkpoint.list_checkpoints(killed / "checkpoints"):
            for f in ckpt.glob("*.safetensors"):
                load_file(str(f))
    if not (killed / DONE).exists():
        res = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
    assert kills >= 3 and (killed / DONE).exists()

    straight = tmp_path / "straight"
    cfg, options = load_config(_config(tmp_path, assets, straight, "s.yaml", steps=steps, checkpoint_every=1,
                                       keep_checkpoints=2, log_every=1000))
    train(cfg, options)
    a = load_file(str(killed / "trainable.safetensors"))
    b = load_file(str(straight / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_bits_on_cpu(tmp_path, assets):
    results = []
    for name in ("a", "b"):
        cfg, options = load_config(_config(tmp_path, assets, tmp_path / name, f"{name}.yaml", steps=4,
                                           checkpoint_every=0))
        results.append(train(cfg, options))
    pa = dict(results[0].model.named_parameters())
    pb = dict(results[1].model.named_parameters())
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert [m["loss"] for m in results[0].metrics] == [m["loss"] for m in results[1].metrics]


def test_pickle_only_weights_are_refused(tmp_path, assets):
    model, tok = load_model(from_config=dict(helpers.TINY["llama"]), tokenizer=str(assets["tokenizer"]))
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle: must not be loaded
    with pytest.raises(RNAError, match="pickle"):
        load_model(str(folder))


def test_no_unsafe_deserialisation_in_the_code():
    """No eval/exec, no pickle, and torch.load only with weights_only=True, anywhere in the packages."""
    offenders = []
    for path in list((REPO / "rna_train").rglob("*.py")) + list((REPO / "rna_theory").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports pickle")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                offenders.append(f"{path.name}:{node.lineno} {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    offenders.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
            for k in node.keywords:
                if k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                    offenders.append(f"{path.name}:{node.lineno} allow_pickle")
    assert not offenders, offenders
