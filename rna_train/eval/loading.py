"""Loading a causal LM and its tokenizer for evaluation, through the trainer's loader."""

from __future__ import annotations

from typing import Any

#: ``--dtype`` choices (those of :func:`rna_train.models.resolve_dtype`).
DTYPES = ("fp32", "bf16", "fp16", "fp64")


def pick_device(device: str | None = None) -> str:
    """``device`` if given (checked: it must exist here), else ``cuda`` when available, else ``cpu``."""
    import torch

    from rna_theory.errors import RNAError

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise RNAError(f"device {device!r} is not available here ({str(exc).splitlines()[0][:120]})",
                       where="--device", fix="use --device cpu, or leave --device out to pick one") from None
    return device


def load_for_eval(path: str, dtype: str = "fp32", device: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a folder or Hub id, in eval mode on ``device``.

    Uses :func:`rna_train.models.load_model` so evaluation and training read checkpoints the same
    way (unknown layouts and unreadable folders fail there with an RNAError).
    """
    from rna_train.models import load_model

    target = pick_device(device)  # before the (slow) load
    model, tokenizer = load_model(path, dtype=dtype)
    model.to(target)
    model.eval()
    return model, tokenizer
