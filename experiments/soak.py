"""Soak test: a long unlearning run on a tiny model, watching memory and step time.

Prints resident memory and steps/s per window of the run. Memory must stay flat (no growth
beyond noise) and step time steady; a leak (e.g. metrics or graphs kept alive) shows up as a rising
RSS column.

    python experiments/soak.py --steps 2000 [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(steps: int, out: Path, sample_every: float = 0.01) -> dict:
    """Run ``steps`` RMU+RNA steps on a tiny Llama; returns per-window memory and throughput."""
    import torch

    sys.path.insert(0, str(REPO / "tests" / "train"))
    import train_helpers as helpers

    from rna_train.config import load_config
    from rna_train.trainer import train

    torch.set_num_threads(1)
    data = helpers.write_corpora(out / "data", n_forget=64, n_retain=64)
    tok = helpers.build_tokenizer(out / "tokenizer")
    raw = helpers.run_config(tok, data, out / "run", method={"name": "rmu", "alpha": 10.0},
                             rna={"mode": "target", "noise": 0.05}, topics=2, steps=steps,
                             checkpoint_every=max(steps // 10, 1), log_every=10**9)
    path = out / "soak.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg, options = load_config(path)
    metrics = out / "run" / "metrics.jsonl"
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            samples.append((time.perf_counter(), done, rss_mib()))
            stop.wait(sample_every)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    start = time.perf_counter()
    train(cfg, options)
    stop.set()
    thread.join()
    total = time.perf_counter() - start
    windows = []
    n_windows = 10
    for w in range(n_windows):
        lo, hi = steps * w // n_windows, steps * (w + 1) // n_windows
        inside = [s for s in samples if lo < s[1] <= hi]
        if len(inside) < 2:
            continue
        (t0, s0, _), (t1, s1, _) = inside[0], inside[-1]
        windows.append({"steps": f"{lo + 1}-{hi}", "rss_mib": round(max(r for _, _, r in inside), 1),
                        "steps_per_s": round((s1 - s0) / (t1 - t0), 2) if t1 > t0 else None})
    rss = [w["rss_mib"] for w in windows]
    return {"steps": steps, "seconds": round(total, 1), "windows": windows,
            "rss_growth_mib_after_first_window": round(max(rss[1:]) - rss[1], 1) if len(rss) > 2 else None}


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args.steps, args.out or Path(tmp))
    sys.stdout.write(f"{'steps':>12} {'RSS MiB':>9} {'steps/s':>8}\n")
    for w in result["windows"]:
        sys.stdout.write(f"{w['steps']:>12} {w['rss_mib']:>9} {w['steps_per_s']!s:>8}\n")
    sys.stdout.write(f"{result['steps']} steps in {result['seconds']} s; RSS growth after the first window: "
                     f"{result['rss_growth_mib_after_first_window']} MiB\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
