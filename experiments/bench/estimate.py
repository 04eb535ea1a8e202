"""Accelerator memory of an RMU run with this trainer, computed from the architecture.

Counts (bytes): the loaded weights (embeddings + layers ``0..l``; the untied output head and the
layers above ``l`` are never loaded), the trainable matrices' gradients and AdamW moments, the
original values kept for the frozen reference (instead of a second model), and the activations
saved for the backward pass (updated layers ``l-2..l``, forget and retain batches; the layers
below run without gradient). Attention is assumed memory-efficient (no seq x seq matrix).

    python experiments/bench/estimate.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

GIB = 2**30

#: name -> (layers, d, intermediate, heads, kv heads, vocab)
SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "Llama-2-70B": (80, 8192, 28672, 64, 8, 32000),
    "Llama-3-70B": (80, 8192, 28672, 64, 8, 128256),
    "Mistral-7B": (32, 4096, 14336, 32, 8, 32000),
}


def layer_params(d: int, inter: int, heads: int, kv_heads: int) -> int:
    """Parameters of one Llama decoder layer (attention, gated MLP, two RMSNorms)."""
    kv = d // heads * kv_heads
    return 2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d


def rmu_memory(name: str, *, layer: int = 7, batch: int = 4, seq: int = 512, weight_bytes: int = 2,
               train_bytes: int = 4) -> dict[str, Any]:
    """Memory breakdown (GiB) of RMU at layer ``layer`` updating ``mlp.down_proj`` of ``l-2..l``.

    ``train_bytes`` is the width of the gradients and of each AdamW moment (4: fp32 states; 2:
    what a plain bf16 run of the trainer keeps).
    """
    n_layers, d, inter, heads, kv_heads, vocab = SHAPES[name]
    kv = d // heads * kv_heads
    weights = (vocab * d + (layer + 1) * layer_params(d, inter, heads, kv_heads) + d) * weight_bytes
    trainable = 3 * d * inter
    optimizer = trainable * 3 * train_bytes  # gradient + two AdamW moments
    originals = trainable * weight_bytes
    tokens = batch * seq
    per_token_layer = (6 * d + d + 2 * kv + 4 * inter) * weight_bytes  # norms, q/k/v, attention out, MLP
    activations = 2 * 3 * tokens * per_token_layer  # forget + retain, 3 updated layers
    workspace = tokens * (3 * inter + 4 * d) * 4  # one layer's no-grad temporaries + fp32 loss terms
    parts = {"weights": weights, "grads_and_adamw": optimizer, "original_values": originals,
             "activations": activations, "workspace": workspace}
    full = (2 * vocab * d + n_layers * layer_params(d, inter, heads, kv_heads)) * weight_bytes
    return {"model": name, "layer": layer, "batch": batch, "seq": seq,
            **{k: v / GIB for k, v in parts.items()}, "total": sum(parts.values()) / GIB,
            "reference_style_weights_only": 2 * full / GIB}


def main(argv: list[str] | None = None) -> int:
    """Print the breakdown for the 70B shapes (fp32 AdamW) and the 7B shape run on the H200."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [rmu_memory("Llama-2-70B"), rmu_memory("Llama-3-70B"), rmu_memory("Mistral-7B", train_bytes=2)]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return 0
    keys = ["weights", "grads_and_adamw", "original_values", "activations", "workspace", "total",
            "reference_style_weights_only"]
    sys.stdout.write("| model | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1) + "\n")
    for row in rows:
        sys.stdout.write(f"| {row['model']} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
