"""The one-shot GPU benchmark: a 7B-shaped bf16 Llama, this trainer vs the reference-style run.

Every method (RMU, Adaptive RMU, RSV, NPO+KL, SimNPO+KL), each execution in its own fresh process
(run in turn: trainer, reference), a warm-up step plus ``--steps`` timed steps at batch 4 x 512
tokens, l = 7; then RNA (nu = 0.01) on for RMU (target) and NPO+KL (target and input), NPO+KL and
SimNPO+KL with full logits (``train.head_chunk_mib=0``), and RMU on a Llama-3-70B-shaped model
with this trainer (embeddings + layers 0..7, what it loads). Per run:
median step time, the reference pass before step 1, tokens/s, peak ``max_memory_allocated`` and
achieved TFLOP/s (FLOPs of one extra step counted by ``torch.utils.flop_counter``, divided by the
median step time) against the card's dense bf16 peak. The JSON is rewritten after every run, so
a time-out keeps what finished.

    python experiments/bench/gpu.py [--out DIR] [--steps 3] [--only NAME,...] [--tiny]   # --tiny: CPU smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("bench.gpu")

SEVEN_B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096}
SEVENTY_B = {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 10, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 500, "max_position_embeddings": 128}
#: Dense bf16 peak of the cards this runs on (H100 SXM and H200 share it), TFLOP/s.
BF16_PEAK_TFLOPS = 989.0


def main(argv: list[str] | None = None) -> int:
    """Run the four measurements and write ``bench_gpu.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = "cpu" if args.tiny else "cuda"
    base = {"kind": "train", "shape": TINY if args.tiny else SEVEN_B, "layer": 7, "batch": 4,
            "seq": 32 if args.tiny else 512, "steps": args.steps, "dtype": "bf16", "device": device, "nu": 0.0,
            "count_flops": True}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"shape": base["shape"], "batch": base["batch"], "seq": base["seq"], "layer": 7,
                                 "dtype": "bf16", "bf16_peak_tflops": BF16_PEAK_TFLOPS, "runs": {}}
    if device == "cuda":
        import torch

        result["device"] = torch.cuda.get_device_name(0)
    runs: dict[str, object] = result["runs"]  # type: ignore[assignment]
    methods = ("rmu", "adaptive_rmu", "rsv", "npo_kl", "simnpo_kl")
    jobs = [(f"{m}/{impl}", {"method": m, "impl": impl}) for m in methods for impl in ("trainer", "reference")]
    jobs += [(f"{m}/trainer/rna_{mode}", {"method": m, "impl": "trainer", "nu": 0.01, "rna_mode": mode})
             for m, mode in (("rmu", "target"), ("npo_kl", "target"), ("npo_kl", "input"))]
    jobs += [(f"{m}/trainer/full_logits", {"method": m, "impl": "trainer", "head_chunk_mib": 0.0})
             for m in ("npo_kl", "simnpo_kl")]
    jobs.append(("rmu/trainer/llama3_70b_shape", {"method": "rmu", "impl": "trainer",
                                                  "shape": TINY if args.tiny else SEVENTY_B}))
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {name for name, _ in jobs})
        if unknown:
            parser.error(f"unknown run(s) {unknown}; known: {[name for name, _ in jobs]}")
        jobs = [job for job in jobs if job[0] in wanted]
    for name, overrides in jobs:
        spec = {**base, **overrides}
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "rna_train.bench.worker", json.dumps(spec)], text=True,
                                  capture_output=True, timeout=args.timeout, check=False)
            lines = proc.stdout.strip().splitlines()
            entry = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "error": proc.stderr.strip().splitlines()[-3:]}
        except subprocess.TimeoutExpired:
            entry = {"error": f"timed out after {args.timeout} s"}
        entry["wall_s"] = time.perf_counter() - start
        if entry.get("flops"):
            entry["tflops_per_s"] = entry["flops"] / entry["step_s"] / 1e12
            entry["mfu"] = entry["tflops_per_s"] / BF16_PEAK_TFLOPS
        runs[name] = entry
        log.info("%s: %s", name, {k: v for k, v in entry.items() if k != "step_times"})
        (out / "bench_gpu.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
