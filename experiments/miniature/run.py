"""Run the miniature-world grid of a YAML file and write summary.json, summary.md and drops.png.

Usage (repository root): python experiments/miniature/run.py --config experiments/miniature/grid.yaml
The base model is pretrained once and cached (--cache-dir, default ~/.cache/rna/miniature).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
import yaml

from rna_train.studies.miniature.experiment import (
    Schedule,
    Variant,
    markdown_table,
    plot_drops,
    plot_predicted,
    run_grid,
)
from rna_train.studies.miniature.pretrain import load_or_pretrain


def main() -> int:
    """Parse arguments, run the grid, write the summaries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="override the config's out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    grid = yaml.safe_load(args.config.read_text())
    out = args.out or Path(grid["out"])
    start = time.perf_counter()
    base = load_or_pretrain(cache_dir=args.cache_dir, progress=False)
    results = run_grid(base, [Variant.parse(v) for v in grid["variants"]], grid["seeds"], out,
                       schedule=Schedule(steps=grid["steps"]),
                       progress=lambda msg: logging.getLogger("miniature").info("run %s", msg))
    table = markdown_table(results)
    plot_drops(results, out / "drops.png")
    plot_predicted(results, out / "predicted.png")
    (out / "summary.md").write_text(table + "\n")
    sys.stdout.write(table + f"\n\nwall time {time.perf_counter() - start:.0f} s; outputs in {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
