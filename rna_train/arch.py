"""Where each architecture keeps its decoder layers: the one place model layouts are resolved.

Every other module asks :func:`decoder_layers` (or :func:`layer_prefix`) instead of walking
attribute paths itself, so supporting a new family is one entry in :data:`LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rna_theory.errors import RNAError

#: model_type -> dotted path from the *CausalLM* module to its list of decoder layers.
LAYOUTS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi": "model.layers",
    "phi3": "model.layers",
    "olmo": "model.layers",
    "olmo2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "smollm3": "model.layers",
}


#: model_type -> default trainable-parameter name patterns inside a decoder layer: the MLP output
#: projection, called ``mlp.down_proj`` in most families (the reference code's choice).
TRAINABLE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "gpt2": ("mlp.c_proj",),
    "gpt_neox": ("mlp.dense_4h_to_h",),
    "phi": ("mlp.fc2",),
}
DEFAULT_TRAINABLE: tuple[str, ...] = ("mlp.down_proj",)

#: model_type values whose CausalLM computes ``logits = output_head(states)`` and nothing else,
#: plus those that soft-cap them (``cap * tanh(logits / cap)``); other families' logits come only
#: from the model's own forward.
PLAIN_HEAD = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "phi", "phi3", "olmo", "olmo2",
                        "gpt2", "gpt_neox", "smollm3"})
SOFTCAP_HEAD = frozenset({"gemma2", "gemma3_text"})


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def layer_prefix(model: nn.Module) -> str:
    """Dotted parameter-name prefix of the decoder layers (e.g. ``model.layers``)."""
    model_type = _model_type(model)
    if model_type in LAYOUTS:
        return LAYOUTS[model_type]
    # Multimodal wrappers (e.g. Gemma 3 conditional generation) keep a text model inside.
    for path in ("model.language_model.layers", "language_model.model.layers"):
        if _resolve(model, path) is not None:
            return path
    raise RNAError(f"unknown model layout {model_type!r} ({type(model).__name__})", where="model",
                   fix=f"supported model_type values: {', '.join(sorted(LAYOUTS))}; add the dotted path "
                       "of its decoder layers to rna_train.arch.LAYOUTS")


def default_trainable_patterns(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name patterns (relative to a decoder layer) updated when the config names none."""
    return TRAINABLE_DEFAULTS.get(_model_type(model), DEFAULT_TRAINABLE)


def _resolve(model: nn.Module, path: str) -> nn.Module | None:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    path = layer_prefix(model)
    layers = _resolve(model, path)
    if not isinstance(layers, nn.ModuleList):
        raise RNAError(f"expected a ModuleList of decoder layers at {path!r}, found {type(layers).__name__}",
                       where="model", fix="fix the entry for this model type in rna_train.arch.LAYOUTS")
    return layers


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers."""
    return len(decoder_layers(model))


def check_layer(model: nn.Module, layer: int, name: str = "layer") -> int:
    """Validate a decoder-layer index (0-based) against the model's depth."""
    n = num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise RNAError(f"layer index {layer!r} is out of range for a {n}-layer model", where=name,
                       fix=f"pick an integer in 0..{n - 1}")
    return layer


def logits_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The map from the states entering the output head to the model's logits, or None if unknown.

    Lets losses apply the head a chunk of positions at a time (:mod:`rna_train.losses`).
    """
    model_type = _model_type(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or model_type not in PLAIN_HEAD | SOFTCAP_HEAD:
        return None
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if model_type in SOFTCAP_HEAD and cap:
        return lambda states: torch.tanh(head(states) / cap) * cap
    return head


def embed_onehot(model: nn.Module, onehot: torch.Tensor) -> torch.Tensor:
    """Input embeddings of (soft) one-hot rows ``onehot`` (..., vocab): ``onehot @ W``, times the
    embedding module's ``embed_scale`` where the family scales its embeddings (Gemma), so that a
    one-hot row embeds exactly as its token id does (gradient-based token search needs this)."""
    embedding = model.get_input_embeddings()
    out = onehot.to(embedding.weight.dtype) @ embedding.weight
    scale = getattr(embedding, "embed_scale", None)
    return out * scale.to(out.dtype) if isinstance(scale, torch.Tensor) else out * (scale or 1.0)
