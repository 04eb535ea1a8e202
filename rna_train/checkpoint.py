"""Atomic, pickle-free checkpoints of the trainable parameters and the optimizer state.

A checkpoint is a folder ``checkpoints/step-NNNNNNN`` holding ``trainable.safetensors`` (the
trainable parameters by name), ``optimizer.safetensors`` (Adam moments keyed by parameter *name*)
and ``state.json`` (step, hyperparameters, non-tensor optimizer state). It is written into a
temporary folder and renamed into place, so a folder with the final name is always complete.
Random state needs no saving: every draw is seeded from ``(seed, step, process)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{7})$")


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a DTensor: a collective, every process must call it)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A whole tensor read from disk, placed like ``target``: its device, dtype and, for a DTensor, its shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        return distribute_tensor(value.to(target.device, target.dtype), target.device_mesh, target.placements)
    return value.to(target.device, target.dtype)


def trainable_state(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named parameters (gathered whole under FSDP2: every process must call it).

    Under FSDP2 the sharded values are read (a module still gathered after a forward holds its
    parameters in the compute dtype, e.g. bf16, instead of the kept precision).
    """
    from rna_train.sharded import reshard

    reshard(model)
    params = dict(model.named_parameters())
    return {n: _full(params[n].detach()).to("cpu").contiguous().clone() for n in names}


def snapshot_path(folder: Path, step: int) -> Path:
    """Where :func:`save_snapshot` puts the trainable tensors of ``step``."""
    return Path(folder) / f"step-{step:07d}.safetensors"


def save_snapshot(folder: Path, step: int, state: dict[str, torch.Tensor]) -> Path:
    """Write the trainable tensors ``state`` after ``step`` (atomically: a temporary file, then a rename)."""
    path = snapshot_path(folder, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        save_file(state, str(tmp))
        tmp.replace(path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if is_io_error(exc):
            raise RNAError(f"could not write snapshot step {step} ({exc})", where=str(path),
                           fix="free disk space (or point output_dir elsewhere) and rerun with --resume") from exc
        raise
    return path


def is_io_error(exc: BaseException) -> bool:
    """An operating-system write failure, also when a library wraps it (safetensors reports a full disk
    as ``SafetensorError: ... I/O error: No space left on device (os error 28)``)."""
    return isinstance(exc, OSError) or "I/O error" in str(exc) or "os error" in str(exc)


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        name = names[idx]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}::{key}"] = _full(value.detach()).to("cpu").contiguous().clone()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save(directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         names: list[str], extra: dict[str, Any], keep: int, *, write: bool = True) -> Path:
    """Write checkpoint ``step`` under ``directory`` atomically and prune to the newest ``keep``.

    Under FSDP2 every process calls this (the shards are gathered) and only the one with ``write``
    writes.

    Files are written into a hidden temporary folder, fsynced (files and folder), then renamed, so
    a folder with the final name is always complete. If writing fails (e.g. the disk is full), the
    temporary folder is removed and the previous checkpoints are left untouched.
    """
    weights = trainable_state(model, names)
    tensors, meta = _optimizer_tensors(optimizer, names)
    final = directory / f"step-{step:07d}"
    if not write:
        return final
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(directory)
    tmp = directory / f".step-{step:07d}.tmp"
    try:
        _write(tmp, weights, tensors, {"step": step, "names": names, **meta, **extra})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_io_error(exc):
            raise
        previous = list_checkpoints(directory)
        raise RNAError(f"could not write checkpoint step {step} ({getattr(exc, 'strerror', None) or exc})",
                       where=str(directory),
                       fix="free disk space (or point output_dir elsewhere) and rerun with --resume; "
                           + (f"the previous checkpoint {previous[-1]} is intact" if previous
                              else "no earlier checkpoint exists")) from exc
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old)
    log.info("checkpoint saved: %s", final)
    return final


def _write(tmp: Path, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
           state: dict[str, Any]) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(weights, str(tmp / "trainable.safetensors"))
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)


def _fsync_dir(path: Path) -> None:
    """Persist a folder's entries (the rename) on POSIX file systems."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp(directory: Path) -> None:
    """Delete temporary folders left by a writer that was killed before its rename.

    They are never loaded (``list_checkpoints`` ignores them); removing them keeps a killed and
    resumed run's folder from accumulating half-written copies. A run folder has one writer, so
    any temporary folder found before a write belongs to a dead process.
    """
    for stale in directory.glob(".step-*.tmp"):
        log.info("removing a partial checkpoint left by an interrupted write: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints under ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Any]:
    """Restore parameters and optimizer state from checkpoint ``path``; returns its ``state.json``."""
    meta = json.loads((path / "state.json").read_text())
    if meta["names"] != names:
        raise RNAError(f"checkpoint trains {len(meta['names'])} different parameters", where=str(path),
                       fix="resume with the config the run was started with")
    params = dict(model.named_parameters())
    weights = load_file(str(path / "trainable.safetensors"))
    with torch.no_grad():
        for n in names:
            params[n].copy_(_like(weights[n], params[n]))
    tensors = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for idx, name in enumerate(names):
        param = params[name]
        entry = {key.split("::", 1)[1]: _like(t, param) if t.shape == param.shape else t
                 for key, t in tensors.items() if key.split("::", 1)[0] == name}
        entry.update(meta["scalars"].get(name, {}))
        if entry:
            state[idx] = entry
    current = optimizer.state_dict()
    groups = [{**g, "params": cg["params"]} for g, cg in zip(meta["param_groups"], current["param_groups"],
                                                              strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta
