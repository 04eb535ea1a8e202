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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

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


def local_originals(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This process's shards of the whole tensors ``originals``, cut like ``model``'s parameters.

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
        out[name] = value.clone()
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
    try:
        yield
    finally:
        with torch.no_grad():
            for module in modules:
                module.reshard()
            params = dict(model.named_parameters())
            for name, value in live.items():
                _local(params[name]).copy_(value)


@contextlib.contextmanager
def gathered(model: nn.Module, originals: Mapping[str, torch.Tensor], reshard_after_forward: bool) -> Iterator[None]:
    """The whole model gathered once with the original values; forwards inside run without collectives.

    ``reshard_after_forward`` is the engine's setting, restored at the end. Every process enters
    and leaves the block together (gathering and resharding are collectives).
    """
    modules = _fsdp_modules(model)
    with swapped(model, originals):
        for module in modules:
            module.set_reshard_after_forward(False, recurse=False)
        try:
            for module in modules:
                module.unshard()
            yield
        finally:
            for module in modules:
                module.set_reshard_after_forward(reshard_after_forward, recurse=False)


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
