"""Run ``rna_train.cli`` with accelerate's FSDP engine on gloo CPU processes (a test-only launcher).

accelerate picks FSDP only on accelerators: on the CPU its state says MULTI_CPU even when
``ACCELERATE_USE_FSDP`` is set. This script sets the distributed type to FSDP (in accelerate's
shared process state too, which each new ``AcceleratorState`` copies) and gives the state an
``FullyShardedDataParallelPlugin`` read from the same environment variables that
``accelerate launch --use_fsdp`` sets, so ``accelerator.prepare`` shards the model with torch's
``fully_shard`` over gloo and the trainer runs its FSDP code paths exactly as on GPUs.

    ACCELERATE_USE_CPU=true ACCELERATE_USE_FSDP=true FSDP_VERSION=2 ... \
        python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/train/fsdp_cpu.py unlearn ...
"""

from __future__ import annotations

import sys

import accelerate
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = accelerate.Accelerator.__init__


def _fsdp_on_cpu(self: accelerate.Accelerator, *args: object, **kwargs: object) -> None:
    _init(self, *args, **kwargs)
    if self.state.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.state.distributed_type = DistributedType.FSDP
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin()


accelerate.Accelerator.__init__ = _fsdp_on_cpu

if __name__ == "__main__":
    from rna_train.cli import main

    sys.exit(main(sys.argv[1:]))
