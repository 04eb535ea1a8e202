"""Whole runs: output files, kill + --resume, and a 2-process CPU run against a 1-process run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import train_helpers as helpers
import yaml
from safetensors.torch import load_file

from rna_train.config import load_config
from rna_train.trainer import DONE, train

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


def _config(tmp_path: Path, assets: dict[str, Path], out: Path, name: str = "c.yaml",
            **train_opts: object) -> Path:
    raw = helpers.run_config(assets["tokenizer"], assets, out, method={"name": "rmu", "alpha": 10.0},
                             rna={"mode": "target", "noise": 0.05}, topics=2, **train_opts)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_run_writes_outputs(tmp_path: Path, assets: dict[str, Path]) -> None:
    out = tmp_path / "out"
    cfg, options = load_config(_config(tmp_path, assets, out, steps=4, save_model=True, checkpoint_every=2))
    train(cfg, options)
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "trainable.safetensors", DONE):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["topic"] for r in rows] == ["bio", "cyber", "bio", "cyber"]
    assert all({"loss", "forget", "retain", "nu", "lr"} <= set(r) for r in rows)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["method"]["steering_coef"] == 6.5 and resolved["train"]["steps"] == 4
    env = json.loads((out / "environment.json").read_text())
    assert {"python", "torch", "transformers", "device", "git_commit"} <= set(env)
    assert env["resolved"]["rna_schedule"]["nu"] == 0.05 and env["resolved"]["rna_schedule"]["total_steps"] == 4
    names = env["resolved"]["trainable"]
    assert names and names == sorted(names)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    AutoTokenizer.from_pretrained(out / "model")
    trained = load_file(str(out / "trainable.safetensors"))
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in trained.items())
    assert (out / "model" / "rna_config.yaml").exists()


def test_snapshots_are_the_weights_at_their_steps(tmp_path: Path, assets: dict[str, Path]) -> None:
    """snapshot_steps keeps the trainable tensors after each listed step, after the run has finished:
    the step-2 snapshot of a 4-step run equals the final weights of the same run stopped at 2 steps
    (the data order and noise do not depend on the run length)."""
    from rna_theory.errors import RNAError
    from rna_train.checkpoint import snapshot_path

    long_out, short_out = tmp_path / "long", tmp_path / "short"
    train(*load_config(_config(tmp_path, assets, long_out, steps=4, snapshot_steps=[2, 4], checkpoint_every=0)))
    train(*load_config(_config(tmp_path, assets, short_out, name="s.yaml", steps=2, checkpoint_every=0)))
    assert sorted(p.name for p in (long_out / "snapshots").iterdir()) == ["step-0000002.safetensors",
                                                                          "step-0000004.safetensors"]
    snap = load_file(str(snapshot_path(long_out / "snapshots", 2)))
    short = load_file(str(short_out / "trainable.safetensors"))
    final = load_file(str(long_out / "trainable.safetensors"))
    assert snap.keys() == short.keys() and all(torch.equal(snap[n], short[n]) for n in snap)
    last = load_file(str(snapshot_path(long_out / "snapshots", 4)))
    assert all(torch.equal(last[n], final[n]) for n in final)
    assert not all(torch.equal(snap[n], final[n]) for n in final)
    with pytest.raises(RNAError, match="after the last step"):
        load_config(_config(tmp_path, assets, tmp_path / "bad", name="b.yaml", steps=4, snapshot_steps=[5]))


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path, assets: dict[str, Path]) -> None:
    steps = 120
    killed = tmp_path / "killed"
    config = _config(tmp_path, assets, killed, steps=steps, checkpoint_every=5, log_every=1000)
    cmd = [sys.executable, "-m", "rna_train.cli", "unlearn", "--config", str(config)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list((killed / "checkpoints").glob("step-*")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "run exited early"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / DONE).exists(), "the run finished before it could be killed"
    done_steps = len((killed / "metrics.jsonl").read_text().splitlines())
    assert done_steps < steps
    res = subprocess.run([*cmd, "--resume"], env=_env(), cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert (killed / DONE).exists()

    straight = tmp_path / "straight"
    cfg, options = load_config(_config(tmp_path, assets, straight, name="s.yaml", steps=steps,
                                       checkpoint_every=5, log_every=1000))
    train(cfg, options)
    a = load_file(str(killed / "trainable.safetensors"))
    b = load_file(str(straight / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows_a = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == list(range(1, steps + 1))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts its workers in their own sessions."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (workers first, so none outlives the launcher)."""
    for child in [*reversed(_descendants(pid)), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


#: accelerate's FSDP2 engine from the environment (what `accelerate launch --use_fsdp` sets), run on
#: gloo CPU processes by tests/train/fsdp_cpu.py.
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
            "FSDP_RESHARD_AFTER_FORWARD": "true"}


def launch_two(engine: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a 2-process gloo CPU run of ``rna_train.cli args`` under
    ``engine`` (``ddp``: accelerate's MULTI_CPU; ``fsdp``: its FSDP2 engine, see fsdp_cpu.py)."""
    # `--cpu` alone keeps accelerate's single-process launcher; torchrun (--multi_gpu) plus
    # ACCELERATE_USE_CPU gives two gloo processes.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    env = {**_env(), "ACCELERATE_USE_CPU": "true"}
    if engine == "fsdp":
        return [*launch, str(Path(__file__).with_name("fsdp_cpu.py")), *args], {**env, **FSDP_ENV}
    return [*launch, "-m", "rna_train.cli", *args], env


def _write(raw: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _two_then_one(tmp_path: Path, raw_for: Any, engine: str, **env: str) -> tuple[Path, Path]:
    """Run the config ``raw_for(out)`` on 2 processes under ``engine`` (extra environment ``env``), then
    on one; returns the two output folders."""
    two, one = tmp_path / "two", tmp_path / "one"
    cmd, base_env = launch_two(engine, ["unlearn", "--config", str(_write(raw_for(two), tmp_path / "two.yaml"))])
    res = subprocess.run(cmd, env={**base_env, **env}, cwd=REPO, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    train(*load_config(_write(raw_for(one), tmp_path / "one.yaml")))
    return two, one


def _assert_same_tensors(a_path: Path, b_path: Path) -> None:
    """Two safetensors files hold the same names and values (2-process vs 1-process tolerance)."""
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert sorted(a) == sorted(b) and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_killed_and_resumed_match_one(tmp_path: Path, assets: dict[str, Path], engine: str) -> None:
    """2 CPU processes (DDP or FSDP2, gloo), SIGKILLed after a checkpoint and resumed on 2 processes,
    give the uninterrupted 1-process weights: same global batches (token means use the global counts
    for sequences of unequal length), the same RNA noise per sample (drawn from the sample's own
    seed, not the process's), the reference shared with the model (no copy), gradient clipping on the
    whole gradient, and under FSDP2 checkpoints gathered from the shards and scattered back on resume.
    """
    steps = 40

    def config(out: Path, name: str) -> Path:
        return _write(helpers.run_config(assets["tokenizer"], assets, out, topics=2, steps=steps, lr=1e-3,
                                         method={"name": "npo", "retain_loss": "kl"},
                                         rna={"mode": "target", "noise": 0.05}, checkpoint_every=4,
                                         log_every=1000, tracker="none", max_grad_norm=0.05), tmp_path / name)

    two = tmp_path / "two"
    args = ["unlearn", "--config", str(config(two, "two.yaml"))]
    cmd, env = launch_two(engine, args)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((two / "checkpoints").glob("step-*")):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else "run exited early"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    _kill_tree(proc.pid)
    proc.wait()
    time.sleep(0.5)
    assert not (two / DONE).exists(), "the run finished before it could be killed"
    cmd, env = launch_two(engine, [*args, "--resume"])
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=400, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    env_record = json.loads((two / "environment.json").read_text())
    assert env_record["num_processes"] == 2
    kind = {"ddp": "MULTI_CPU", "fsdp": "FSDP"}[engine]
    assert env_record["distributed_type"] == f"DistributedType.{kind}"
    assert env_record["resolved"]["reference"].startswith("shared")  # no copy of the model
    one = tmp_path / "one"
    train(*load_config(config(one, "one.yaml")))
    _assert_same_tensors(two / "trainable.safetensors", one / "trainable.safetensors")
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    # The gradient norm (clipped at 0.05: every step here is above it) is that of the whole gradient.
    ones = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert min(r["grad_norm"] for r in ones) > 0.05
    assert [r["grad_norm"] for r in rows] == pytest.approx([r["grad_norm"] for r in ones], rel=1e-4)


@pytest.mark.parametrize("steps", [2])
def test_progress_and_logging_do_not_print(tmp_path: Path, assets: dict[str, Path], steps: int,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg, options = load_config(_config(tmp_path, assets, tmp_path / "out", steps=steps))
    train(cfg, options)
    assert capsys.readouterr().out == ""


def test_grad_accumulation_matches_one_micro_batch(tmp_path: Path, assets: dict[str, Path]) -> None:
    """batch 4 as 2 micro-batches of 2 gives the 1 x 4 result, with sequences of unequal length."""
    results = []
    for accum in (1, 2):
        raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / f"a{accum}", steps=3, lr=1e-3,
                                 grad_accum=accum, method={"name": "rmu", "alpha": 10.0, "retain_loss": "kl"})
        path = tmp_path / f"a{accum}.yaml"
        path.write_text(yaml.safe_dump(raw))
        train(*load_config(path))
        results.append(load_file(str(tmp_path / f"a{accum}" / "trainable.safetensors")))
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-6)


def test_fsdp_refuses_an_incomplete_reference_cache(tmp_path: Path, assets: dict[str, Path]) -> None:
    """Under FSDP2 the reference shares the sharded model, so a sequence left out of the reference cache
    (computed every step on one process only) would stall the others: the run stops with the fix."""
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", steps=2, lr=1e-3,
                             method={"name": "npo", "retain_loss": "kl"}, rna={"mode": "target", "noise": 0.05},
                             reference_cache_gib=1e-9, tracker="none")
    cmd, env = launch_two("fsdp", ["unlearn", "--config", str(_write(raw, tmp_path / "c.yaml"))])
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode != 0
    assert "reference cache could not hold every sequence" in res.stderr
    assert "train.reference_cache_gib" in res.stderr and not (tmp_path / "out" / DONE).exists()


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_two_process_lora_matches_one(tmp_path: Path, assets: dict[str, Path], engine: str, save: str) -> None:
    """LoRA on 2 processes (DDP, or FSDP2 with the adapters sharded) gives the 1-process run's merged
    weights (``trainable.safetensors``), and its saved model or adapter folder reloads with the same
    values: the merge reads the tensors gathered from the shards."""
    def raw_for(out: Path) -> dict:
        raw = helpers.run_config(assets["tokenizer"], assets, out, topics=2, steps=6, lr=1e-2,
                                 method={"name": "npo", "retain_loss": "kl"}, rna={"mode": "target", "noise": 0.05},
                                 save_model=True, log_every=1000, tracker="none", snapshot_steps=[3])
        raw["model"]["lora"] = {"rank": 4, "save": save}
        return raw

    two, one = _two_then_one(tmp_path, raw_for, engine)
    for path in ("trainable.safetensors", "snapshots/step-0000003.safetensors"):
        _assert_same_tensors(two / path, one / path)
    final = load_file(str(one / "trainable.safetensors"))  # the adapters did train (lora_B starts at 0)
    middle = load_file(str(one / "snapshots/step-0000003.safetensors"))
    moved = ([final[n] for n in final if ".lora_B." in n] if save == "adapter"
             else [final[n] - middle[n] for n in final])
    assert max(float(t.abs().max()) for t in moved) > 1e-4
    folder = "adapter" if save == "adapter" else "model"
    _assert_same_tensors(next((two / folder).glob("*.safetensors")), next((one / folder).glob("*.safetensors")))


@pytest.mark.parametrize("reshard", ["true", "false"])
@pytest.mark.parametrize("method", [{"name": "npo", "retain_loss": "kl"}, {"name": "rmu", "alpha": 10.0}])
def test_fsdp_reference_in_the_steps_matches_one(tmp_path: Path, assets: dict[str, Path], method: dict,
                                                 reshard: str) -> None:
    """With the reference computed in the steps (``reference_cache: false``) and RNA at layer 1, below
    trainable layer 2, every step's reference forwards run on the sharded model with the original
    shards written in: NPO's reference NLL and the noisy KL target, RMU's noisy layer-2 target. The
    2-process FSDP2 run equals the 1-process one for both ``reshard_after_forward`` settings."""
    def raw_for(out: Path) -> dict:
        return helpers.run_config(assets["tokenizer"], assets, out, topics=2, steps=6, lr=1e-2, method=method,
                                  rna={"mode": "target", "layer": 1, "noise": 0.05}, reference_cache=False,
                                  log_every=1000, tracker="none")

    two, one = _two_then_one(tmp_path, raw_for, "fsdp", FSDP_RESHARD_AFTER_FORWARD=reshard)
    _assert_same_tensors(two / "trainable.safetensors", one / "trainable.safetensors")
    rows_a = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    for key in ("forget", "retain"):
        assert [r[key] for r in rows_a] == pytest.approx([r[key] for r in rows_b], rel=1e-4, abs=1e-7)
