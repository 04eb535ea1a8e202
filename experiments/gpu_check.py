"""GPU check of the trainer at real size with random weights (no downloads needed).

Builds a Mistral-7B-shaped model (Zephyr-7B's architecture) from a config directly on the GPU,
runs RMU and NPO, each with target-mode RNA, for a few steps on synthetic 512-token documents, and
writes step times and peak GPU memory to ``$OUT/gpu_check.json`` (or ./gpu_check.json).

    python3 experiments/gpu_check.py [--layers 32] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import torch
import yaml

from rna_train.config import load_config
from rna_train.models import load_model
from rna_train.trainer import train

log = logging.getLogger("gpu_check")
REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "fixtures" / "train" / "tokenizer"


def _corpus(path: Path, words: list[str], docs: int, length: int, seed: int) -> str:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(length))}) + "\n"
                            for _ in range(docs)))
    return str(path)


def main() -> None:
    """Run the configured methods and report timings and memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    tmp = Path(tempfile.mkdtemp())
    vocab = [w for w in json.loads((TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"]
             if not w.startswith("<")]
    data = {name: _corpus(tmp / f"{name}.jsonl", vocab, 16, args.max_length, i)
            for i, name in enumerate(("bio", "cyber", "retain"))}
    shape = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": args.layers, "num_attention_heads": 32, "num_key_value_heads": 8,
             "vocab_size": 32000, "max_position_embeddings": 4096, "sliding_window": None}
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model, tok = load_model(from_config=shape, tokenizer=str(TOKENIZER), dtype="bf16", seed=0)
    report: dict[str, object] = {"device": torch.cuda.get_device_name(0), "layers": args.layers,
                                 "params_billion": sum(p.numel() for p in model.parameters()) / 1e9,
                                 "build_s": time.perf_counter() - t0, "runs": {}}
    runs = {
        "rmu_rna_target": ({"name": "rmu", "layer": 7, "steering_coef": 6.5, "alpha": 1200.0}, 0.05, 5e-5),
        "npo_kl_rna_target": ({"name": "npo", "layer": 7, "alpha": 50.0, "retain_loss": "kl"}, 0.01, 2e-5),
    }
    original = {k: v.clone() for k, v in model.state_dict().items() if "mlp.down_proj" in k}
    for name, (method, nu, lr) in runs.items():
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if k in original:
                    v.copy_(original[k])
        raw = {"output_dir": str(tmp / name), "model": {"from_config": shape, "tokenizer": str(TOKENIZER),
                                                      "dtype": "bf16"},
               "data": {"forget": [{"name": t, "path": data[t]} for t in ("bio", "cyber")],
                        "retain": {"path": data["retain"]}, "max_length": args.max_length},
               "method": method, "rna": {"mode": "target", "noise": nu},
               "train": {"steps": args.steps, "batch_size": 4, "lr": lr, "checkpoint_every": 0,
                         "save_model": False, "progress": False, "log_every": 1}}
        cfg_path = tmp / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = train(*load_config(cfg_path), model_and_tokenizer=(model, tok))
        torch.cuda.synchronize()
        total = time.perf_counter() - start
        rows = result.metrics
        report["runs"][name] = {  # type: ignore[index]
            "steps": len(rows), "total_s": total, "first_loss": rows[0]["loss"],
            "last_loss": rows[-1]["loss"],
            "forget": [r["forget"] for r in rows], "retain": [r.get("retain") for r in rows],
            "finite": all(all(v == v for v in r.values() if isinstance(v, float)) for r in rows),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
        del result
        torch.cuda.empty_cache()
    out = Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    out.write_text(json.dumps(report, indent=1))
    log.info("%s", json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
