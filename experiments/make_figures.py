"""Rebuild the miniature-world and SmolLM2 multiple-choice figures (docs/img/miniature_*, smollm2_mcq_*)
and tables of docs/results.md from finished runs' summary.json files (the text study: study.py summary).

Usage (repository root): python experiments/make_figures.py [--miniature runs/miniature] [--smollm2 runs/smollm2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rna_train.studies.miniature.experiment import Results, collect_numbers, markdown_table, plot_drops, plot_predicted


def main() -> int:
    """Write docs/img/<name>_drops.png and _predicted.png and print each table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--miniature", type=Path, default=Path("runs/miniature"))
    parser.add_argument("--smollm2", type=Path, default=Path("runs/smollm2"))
    parser.add_argument("--img", type=Path, default=Path("docs/img"))
    parser.add_argument("--recollect", action="store_true",
                        help="re-read every run's eval/audit files (after adding fields to collect_numbers)")
    args = parser.parse_args()
    for name, folder in (("miniature", args.miniature), ("smollm2_mcq", args.smollm2)):
        path = folder / "summary.json"
        if not path.is_file():
            sys.stdout.write(f"{name}: no {path}, skipped\n")
            continue
        doc = json.loads(path.read_text())
        if args.recollect:
            doc["runs"] = [{**r, **collect_numbers(folder / r["variant"] / f"seed-{r['seed']}")} for r in doc["runs"]]
            doc["summary"] = Results(doc["runs"], doc["seconds"]).summary()
            path.write_text(json.dumps(doc, indent=2) + "\n")
        results = Results(doc["runs"], doc["seconds"])
        plot_drops(results, args.img / f"{name}_drops.png")
        plot_predicted(results, args.img / f"{name}_predicted.png")
        sys.stdout.write(f"## {name} ({doc['seconds']:.0f} s)\n\n{markdown_table(results)}\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
