"""LoRA adapters (``peft``) in place of full-matrix updates of the selected parameters.

:func:`inject` puts a rank-r adapter on every linear module whose weight the run would otherwise
train (``model.trainable``), in place: the model object, its layer names and RNA's hooks stay as
they are, and only the adapters' ``lora_A``/``lora_B`` tensors are trainable. peft initialises
``lora_B`` to zero, so the adapters' *initial* values are the frozen reference: the trainer's
shared-weights reference (the live model with the original values swapped in) is the base model
with no copy of anything but the adapters. At the end, :func:`merged_weights` gives the updated
full matrices (``W + scale * B A``) under their original names (snapshots, the final
``trainable.safetensors``, a merged ``model/``), :func:`unload` makes the model plain again, and
:func:`save_adapter` writes a folder that ``peft.PeftModel.from_pretrained`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rna_theory.errors import RNAError

ADAPTER = "default"
#: File names of a peft adapter folder.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _require_peft() -> Any:
    try:
        import peft
    except ImportError:
        raise RNAError("LoRA needs the peft package, which is not installed", where="model.lora.rank",
                       fix="pip install peft (or set model.lora.rank=0 to train the full matrices)") from None
    return peft


def _target_modules(model: nn.Module, trainable: list[str]) -> tuple[list[str], bool]:
    """Names of the linear modules owning the selected weights; and whether any is a GPT-2 ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D

    modules: list[str] = []
    conv1d = False
    for name in trainable:
        owner, _, leaf = name.rpartition(".")
        if leaf == "bias":
            continue  # the module's weight (if selected) carries the adapter; biases stay frozen
        module = model.get_submodule(owner) if owner else model
        if leaf != "weight" or not isinstance(module, (nn.Linear, Conv1D)):
            raise RNAError(f"LoRA adapts the weights of linear layers; {name} ({type(module).__name__}) is not one",
                           where="model.trainable.patterns",
                           fix="select linear projections (e.g. mlp.down_proj, self_attn.o_proj) or set "
                               "model.lora.rank=0 to train the full parameters")
        conv1d = conv1d or isinstance(module, Conv1D)
        modules.append(owner)
    if not modules:
        raise RNAError(f"no weight matrix among the selected parameters {trainable[:4]}",
                       where="model.trainable.patterns", fix="select linear projections' weights")
    return sorted(set(modules)), conv1d


def inject(model: nn.Module, trainable: list[str], *, rank: int, alpha: float | None, dropout: float,
           seed: int) -> list[str]:
    """Add rank-``rank`` adapters to the modules owning ``trainable``; returns the adapter parameter names.

    Every other parameter is frozen. ``lora_A`` is drawn from a generator seeded with ``seed`` (the
    same adapters on every process and on resume); ``alpha`` defaults to ``2 * rank``.
    """
    peft = _require_peft()
    modules, conv1d = _target_modules(model, trainable)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                             target_modules=modules, fan_in_fan_out=conv1d, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    model._rna_lora_config = config  # read by save_adapter
    names = sorted(n for n, _ in model.named_parameters() if ".lora_" in n)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return names


def _layers(model: nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def is_lora(model: nn.Module) -> bool:
    """True when :func:`inject` put adapters into ``model`` (and :func:`unload` has not removed them)."""
    return getattr(model, "_rna_lora_config", None) is not None


def source_names(model: nn.Module) -> list[str]:
    """The tensors a merge reads: each adapted module's base weight, ``lora_A`` and ``lora_B``."""
    return sorted(f"{name}.{part}" for name in _layers(model)
                  for part in ("base_layer.weight", f"lora_A.{ADAPTER}.weight", f"lora_B.{ADAPTER}.weight"))


@torch.no_grad()
def merged_from(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{module.weight: W + scale * B A}`` on the CPU from whole tensors named as :func:`source_names`.

    The tensors may come from another process (a state dict gathered from FSDP2 shards); ``model``
    gives only the adapters' layout (scale, ``fan_in_fan_out``). The sum is taken in float32 and
    rounded once to ``W``'s dtype, as peft's in-place merge does.
    """
    out = {}
    for name, layer in _layers(model).items():
        base = tensors[f"{name}.base_layer.weight"].detach().to("cpu")
        a = tensors[f"{name}.lora_A.{ADAPTER}.weight"].detach().to("cpu", torch.float32)
        b = tensors[f"{name}.lora_B.{ADAPTER}.weight"].detach().to("cpu", torch.float32)
        delta = b @ a
        if layer.fan_in_fan_out:
            delta = delta.T
        out[f"{name}.weight"] = (base.float() + delta * layer.scaling[ADAPTER]).to(base.dtype).contiguous()
    return out


def merged_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{module.weight: W + scale * B A}`` on the CPU for every adapted module, the model untouched.

    Under FSDP2 the tensors are gathered from the shards: every process must call it.
    """
    from rna_train.checkpoint import trainable_state

    return merged_from(model, trainable_state(model, source_names(model)))


def merged_names(model: nn.Module) -> list[str]:
    """The original names of the adapted weights (what a full-matrix run would train)."""
    return sorted(f"{name}.weight" for name in _layers(model))


def plain_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the adapted model as the plain model's: adapters merged, peft's key names undone.

    Tensors a merge needs and ``state`` lacks are read from ``model`` (one process or DDP; a state
    gathered from FSDP2 shards holds them all).
    """
    from rna_train.checkpoint import trainable_state
    from rna_train.sharded import is_sharded

    out = {key.replace(".base_layer.", "."): value for key, value in state.items() if ".lora_" not in key}
    missing = [n for n in source_names(model) if n not in state]
    if missing and is_sharded(model):  # reading them would be a collective on this process alone
        raise RNAError(f"the gathered state lacks {missing[:3]} for the LoRA merge", where="model.lora",
                       fix="report this: the sharded model's parameter names differ from its state dict's")
    out.update(merged_from(model, {**state, **trainable_state(model, missing)}))
    return out


def unload(model: nn.Module) -> list[str]:
    """Merge every adapter into its base weight and put the plain module back; returns the merged names."""
    names = []
    for name, layer in _layers(model).items():
        layer.merge(safe_merge=True, adapter_names=[ADAPTER])
        model.set_submodule(name, layer.get_base_layer())
        names.append(f"{name}.weight")
    model._rna_lora_config = None
    return sorted(names)


def save_adapter(model: nn.Module, folder: Path, base_model: str | None,
                 state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``folder`` as a peft adapter (config + weights) of ``base_model``.

    ``state``: the model's tensors by name when the live ones are shards (a gathered state dict).
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = model._rna_lora_config
    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, state_dict=dict(state) if state is not None else None,
                                      adapter_name=ADAPTER)
    # PeftModel keeps the wrapped model under base_model.model; its loader expects those keys.
    save_file({f"base_model.model.{k}": v.detach().to("cpu").contiguous() for k, v in state.items()},
              str(folder / ADAPTER_WEIGHTS))
    config.base_model_name_or_path = base_model
    config.save_pretrained(str(folder))


def adapter_base(folder: Path) -> str | None:
    """The base model an adapter folder names, or None when ``folder`` is no adapter."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise RNAError(f"unreadable adapter config ({exc})", where=str(path),
                       fix="rewrite or remove the file") from None
    if not base:
        raise RNAError("the adapter names no base model", where=str(path),
                       fix="set base_model_name_or_path in adapter_config.json")
    return str(base)
