"""The frozen reference on an FSDP2-sharded model, without a copy of the weights.

Under FSDP2 (torch ``fully_shard``) every process holds a shard of each parameter (a ``DTensor``)
and each forward all-gathers the shards layer by layer, so the one-process trick of substituting
tensors for the duration of a call (``torch.func.functional_call``) has no effect: FSDP gathers
its own shards. Instead the original values of the trainable parameters are kept *as shards*
(``1/N`` of the trainable tensors per process) and written into the live shards in place for the
duration of a reference forward:

* :func:`swapped`: one reference forward inside a training step; every FSDP module is resharded
  before (so no layer keeps a gathered copy of the updated values) and after (so the backward
  re-gathers the updated values). Every process must run the same reference forwards, as for any
  FSDP forward; the trainer guarantees it (:func:`check_complete_cache`).
* :func:`gathered`: the reference pass before step 1, whose number of forwards differs between
  processes (each visits its own sequences): the whole model is gathered once with the original
  values, forwards run without collectives, and the shards are restored at the end. Its peak
  memory is one whole model per process, for the duration of the pass only (the copy it replaces
  stayed for the whole run).

Forwards on the sharded model must run to the end (a forward stopped early by an exception leaves
FSDP's per-iteration state mid-forward, and a module left gathered would keep the wrong values):
the step context never truncates them (``StepContext.complete_forwards``). On an accelerator the
writes are synchronised before FSDP's all-gather streams read the shards, and the autocast weight
cache (keyed by the parameter, which FSDP reuses for both sets of values) is cleared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from rna_theory.errors import RNAError


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    """True when ``model`` was sharded with FSDP2 (``fully_shard``)."""
    return bool(_fsdp_modules(model))


def _local(param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return param.to_local() if isinstance(param, DTensor) else param


def _settled(tensor: torch.Tensor) -> None:
    """Wait for the writes to ``tensor`` on an accelerator: FSDP reads shards on its own streams."""
    if tensor.device.type == "cpu":
        return
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):
        accelerator.synchronize(tensor.device)
    elif tensor.device.type == "cuda":
        torch.cuda.synchronize(tensor.device)


def reshard(model: nn.Module) -> None:
    """Free every gathered (unsharded) parameter of ``model``'s FSDP modules; a no-op without FSDP."""
    for module in _fsdp_modules(model):
        module.reshard()


def local_originals(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This process's shards of the whole tensors ``originals``, cut like ``model``'s parameters and
    placed where the live shards are (the host, with CPU offload).

    Every process must call it (placing a tensor as a ``DTensor`` is a collective).
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(model.named_parameters())
    out = {}
    for name, value in originals.items():
        param = params[name]
        value = value.to(param.device, param.dtype)
        if isinstance(param, DTensor):
            value = distribute_tensor(value, param.device_mesh, param.placements).to_local()
        out[name] = value.to(_local(param).device).clone()
    return out


@contextlib.contextmanager
def swapped(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Forwards of ``model`` inside the block run on the original values (shards from :func:`local_originals`).

    The updated values come back at the end; an autograd graph built before the block stays valid
    (FSDP's backward re-gathers the parameters from the restored shards). Parameters of layers
    that are not in the model during the block (replayed by :func:`rna_train.models.replay_prefix`)
    do not compute and are left alone.
    """
    modules = _fsdp_modules(model)
    live = {}
    with torch.no_grad():
        for module in modules:
            module.reshard()
        # Looked up after resharding: a gathered module's parameters are its whole (unsharded) tensors.
        params = dict(model.named_parameters())
        for name, value in originals.items():
            if name not in params:
                continue
            shard = _local(params[name])
            live[name] = shard.clone()
            shard.copy_(value)
            _settled(shard)
    torch.clear_autocast_cache()
    try:
        yield
    finally:
        with torch.no_grad():
            for module in modules:
                module.reshard()
            params = dict(model.named_parameters())
            for name, value in live.items():
                shard = _local(params[name])
                shard.copy_(value)
                _settled(shard)
        torch.clear_autocast_cache()


def _reshard_settings(modules: list[nn.Module]) -> list[tuple[Any, bool, list[Any]]] | None:
    """Each FSDP module's own ``reshard_after_forward`` (torch's private state; None if its layout differs)."""
    out = []
    for module in modules:
        state = module._get_fsdp_state()
        groups = getattr(state, "_fsdp_param_groups", None)
        if groups is None or not hasattr(state, "_auto_reshard_after_forward"):
            return None
        out.append((state, state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in groups]))
    return out


def _restore_reshard(modules: list[nn.Module], saved: list[tuple[Any, bool, list[Any]]] | None,
                     default: bool) -> None:
    if saved is None:
        for module in modules:
            module.set_reshard_after_forward(default, recurse=False)
        return
    for state, auto, infos in saved:
        state._auto_reshard_after_forward = auto
        for group, info in zip(state._fsdp_param_groups, infos, strict=True):
            group.post_forward_mesh_info = info


@contextlib.contextmanager
def gathered(model: nn.Module, originals: Mapping[str, torch.Tensor], reshard_after_forward: bool) -> Iterator[None]:
    """The whole model gathered once with the original values; forwards inside run without collectives.

    Each module's own ``reshard_after_forward`` is restored at the end (``reshard_after_forward``, the
    engine's setting, if torch's state has another layout than expected). Every process enters
    and leaves the block together (gathering and resharding are collectives).
    """
    modules = _fsdp_modules(model)
    saved = _reshard_settings(modules)
    with swapped(model, originals):
        for module in modules:
            module.set_reshard_after_forward(False, recurse=False)
        try:
            for module in modules:
                module.unshard()
            yield
        finally:
            _restore_reshard(modules, saved, reshard_after_forward)


def check_complete_cache(refused: bool, all_refused: float) -> None:
    """Refuse a run whose reference cache missed sequences on some process (``all_refused`` > 0).

    With the reference shared with the sharded model, a cache miss means a reference forward on one
    process only, which the others would not join.
    """
    if all_refused:
        where = "this process" if refused else "another process"
        raise RNAError(f"the reference cache could not hold every sequence ({where} reached the budget or "
                       "met an unreplayable layer output); under FSDP the reference shares the sharded "
                       "model, and a sequence computed every step on one process only would stall the others",
                       where="train.reference_cache_gib",
                       fix="raise train.reference_cache_gib, or set train.reference_cache=false "
                           "(every reference value computed in the steps, on every process alike)")
