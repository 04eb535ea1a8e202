"""The frozen reference on an FSDP2-sharded model without a copy (rna_train.sharded), on 2 gloo CPU
processes with torch's ``fully_shard``: original values swapped into the live shards give the
original model's outputs, the updated values come back after, a graph built before the swap
differentiates to the updated model's gradients, and the gathered reference pass runs a different
number of forwards on each process without stalling. Both ``reshard_after_forward`` settings.

(The whole trainer under accelerate's FSDP2 engine: tests/train/test_train_runs.py.)
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

SHIFT = 0.5  # how far the "updated" weights are from the originals: far above float rounding


def _plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4))


def _grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(x).pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, reshard: bool, folder: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from rna_train import sharded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    trainable = ["0.weight", "2.weight", "4.weight"]  # 2.weight: 5 rows, cut 3 + 2
    original = _plain()
    updated = copy.deepcopy(original)
    with torch.no_grad():
        for n, p in updated.named_parameters():
            if n in trainable:
                p.add_(SHIFT)
    originals = {n: p.detach().clone() for n, p in original.named_parameters() if n in trainable}
    model = copy.deepcopy(updated)
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    assert sharded.is_sharded(model) and not sharded.is_sharded(original)
    local = sharded.local_originals(model, originals)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    want_ref, want_live = original(x).detach(), updated(x).detach()
    want_grads = _grads(updated, x)

    model.zero_grad()
    loss = model(x).pow(2).sum()  # graph on the updated values ...
    with torch.no_grad(), sharded.swapped(model, local):
        torch.testing.assert_close(model(x), want_ref, rtol=0, atol=1e-6)
    loss.backward()  # ... differentiated after the swap: the updated model's gradients
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad.full_tensor(), want_grads[n], rtol=1e-5, atol=1e-6)
    # Under autocast the cast weights are cached by parameter, which FSDP reuses for both sets of values.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_cast = original(x).float().detach()
        model(x).sum().backward()  # an updated forward fills the cache first
        with torch.no_grad(), sharded.swapped(model, local):
            torch.testing.assert_close(model(x).float(), want_cast, rtol=0, atol=0.05)
    model.zero_grad()
    settings = [(m._get_fsdp_state()._auto_reshard_after_forward,
                 [g.post_forward_mesh_info for g in m._get_fsdp_state()._fsdp_param_groups])
                for m in model.modules() if isinstance(m, FSDPModule)]
    with torch.no_grad():
        torch.testing.assert_close(model(x), want_live, rtol=0, atol=1e-6)
        with sharded.gathered(model, local, not reshard):  # (the engine default differs from the modules')
            for _ in range(rank + 1):  # unequal counts: no collective inside the block
                torch.testing.assert_close(model(x), want_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(x), want_live, rtol=0, atol=1e-6)
    assert settings == [(m._get_fsdp_state()._auto_reshard_after_forward,  # each module's own setting back
                         [g.post_forward_mesh_info for g in m._get_fsdp_state()._fsdp_param_groups])
                        for m in model.modules() if isinstance(m, FSDPModule)]
    for module in model.modules():  # (without resharding, reshard=False leaves whole tensors in place)
        if isinstance(module, FSDPModule):
            module.reshard()
    for n, p in model.named_parameters():
        if n in trainable:
            torch.testing.assert_close(p.full_tensor(), dict(updated.named_parameters())[n], rtol=0, atol=0)
    if rank == 0:
        (Path(folder) / "ok").write_text(type(next(model.parameters())).__name__)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("reshard", [True, False])
def test_sharded_reference_swaps_in_place(tmp_path: Path, reshard: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mp.spawn(_worker, args=(2, port, reshard, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "ok").read_text() == "DTensor"  # the parameters really were sharded


def test_incomplete_cache_is_refused_on_every_process() -> None:
    """The flag is summed over processes: a complete cache here and an incomplete one elsewhere stops too."""
    from rna_theory.errors import RNAError
    from rna_train import sharded

    sharded.check_complete_cache(False, 0.0)
    for here, where in ((False, "another process"), (True, "this process")):
        with pytest.raises(RNAError, match=where) as info:
            sharded.check_complete_cache(here, 1.0)
        assert info.value.where == "train.reference_cache_gib"
