"""Layer-truncated loading and shard-by-shard saving for representation-misdirection runs.

RMU, Adaptive RMU and RSV read nothing above decoder layer ``l``: their losses live on layer
``l``'s output and their trainable matrices sit at or below it. For them the trainer loads only
the embeddings and layers ``0 .. l`` (a config with ``num_hidden_layers = l + 1``; transformers
skips the checkpoint's other tensors) and drops an untied output head, so a 70B model at
``l = 7`` needs 8 of its 80 layers in accelerator memory. The saved model is the original
checkpoint with the trained tensors replaced, written one shard at a time
(:func:`save_patched`), so it loads with ``from_pretrained`` like the full-model save.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)


def safetensors_files(folder: str | Path) -> list[Path]:
    """The ``*.safetensors`` weight files of a checkpoint folder (empty if it has none)."""
    path = Path(folder)
    return sorted(path.glob("*.safetensors")) if path.is_dir() else []


def can_truncate(name_or_path: str | None, gguf_file: str | None) -> bool:
    """Whether ``name_or_path`` is a local folder with a config and safetensors weights."""
    if name_or_path is None or gguf_file:
        return False
    folder = Path(name_or_path)
    return (folder / "config.json").is_file() and bool(safetensors_files(folder))


def truncated_config(config: Any, layers: int) -> Any:
    """``config`` with only the first ``layers`` decoder layers (per-layer lists trimmed too)."""
    text = config.get_text_config()
    total = int(text.num_hidden_layers)
    if not 0 < layers <= total:
        raise RNAError(f"cannot keep {layers} of {total} layers", where="method.layer",
                       fix=f"use a layer index below {total}")
    text.num_hidden_layers = layers
    for key in ("layer_types", "mlp_only_layers"):
        value = getattr(text, key, None)
        if isinstance(value, list) and len(value) == total:
            setattr(text, key, value[:layers])
    return config


def drop_output_head(model: nn.Module) -> None:
    """Replace an untied output projection's weight by an empty tensor (never reached).

    A tied head shares the input embedding's tensor and costs nothing; an untied one is
    ``vocab x d`` (2 GB in bf16 for a 70B Llama-3) of weights no layer-``l`` loss reads.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or embed is None or head.weight is embed.weight:
        return
    weight = head.weight
    head.weight = nn.Parameter(weight.new_empty(0), requires_grad=False)
    del weight


def save_patched(source: str | Path, target: str | Path, updated: Mapping[str, torch.Tensor]) -> None:
    """Copy checkpoint folder ``source`` to ``target`` with the ``updated`` tensors replaced by name.

    Every safetensors shard is read, patched and written on its own (peak memory: one shard);
    every other file (config, shard index, generation config, tokenizer files) is copied as is.
    Each updated tensor must exist in the checkpoint with the same shape; it is stored in the
    checkpoint's dtype.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    src, dst = Path(source), Path(target)
    dst.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    for item in sorted(src.iterdir()):
        if item.is_dir():
            continue
        if item.suffix != ".safetensors":
            shutil.copy2(item, dst / item.name)
            continue
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(item), framework="pt") as fh:
            metadata = fh.metadata()
            for name in fh.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                value = fh.get_tensor(name)
                if name in updated:
                    new = updated[name]
                    if tuple(new.shape) != tuple(value.shape):
                        raise RNAError(f"trained tensor {name} has shape {tuple(new.shape)}, the checkpoint "
                                       f"{tuple(value.shape)}", where=str(item), fix="save from the same model")
                    value = new.detach().to(device="cpu", dtype=value.dtype).contiguous()
                    found.add(name)
                tensors[name] = value
        save_file(tensors, str(dst / item.name), metadata=metadata)
        log.debug("wrote %s (%d tensors)", dst / item.name, len(tensors))
    missing = sorted(set(updated) - found)
    if missing:
        raise RNAError(f"trained tensors not found in the checkpoint: {', '.join(missing[:4])}",
                       where=str(src), fix="train a model loaded from this folder")
