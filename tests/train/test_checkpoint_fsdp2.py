"""Checkpoints of FSDP2-sharded parameters (DTensors) on 2 gloo CPU processes: gathered whole, written
by one process, scattered back into the shards on load; the resumed step equals the uninterrupted one.

(accelerate runs FSDP only on accelerators, so the trainer's FSDP path itself is exercised on a GPU;
this tests the checkpoint code that path uses, with torch's own ``fully_shard`` on the CPU.)
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _model(world: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 4))
    mesh = init_device_mesh("cpu", (world,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=0.05)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    model(torch.randn(5, 8, generator=gen)).pow(2).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from rna_train import checkpoint

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    out = Path(folder)
    model, opt = _model(world)
    names = [n for n, _ in model.named_parameters()]
    for seed in (1, 2):
        _step(model, opt, seed)
    checkpoint.save(out / "ckpt", 2, model, opt, names, {}, keep=2, write=rank == 0)
    dist.barrier()
    _step(model, opt, 3)
    straight = checkpoint.trainable_state(model, names)
    resumed, opt2 = _model(world)
    checkpoint.load(out / "ckpt" / "step-0000002", resumed, opt2, names)
    _step(resumed, opt2, 3)
    again = checkpoint.trainable_state(resumed, names)
    local = type(next(resumed.parameters())).__name__
    if rank == 0:
        torch.save({"straight": straight, "resumed": again, "kind": local}, out / "result.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_fsdp2_checkpoint_round_trip(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt")
    assert result["kind"] == "DTensor"  # the parameters really were sharded
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-0000002"]
    for name, value in result["straight"].items():
        assert value.shape == result["resumed"][name].shape and value.dim() >= 1
        torch.testing.assert_close(result["resumed"][name], value, rtol=0, atol=0)
