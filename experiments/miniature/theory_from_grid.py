"""Evaluate the setting-4 verifiers (C1, C6, C7, C8) on a finished miniature grid instead of re-running it.

The grid of experiments/miniature/grid.yaml contains every configuration the verifiers use (base,
RMU and NPO without RNA and with target / input RNA at nu = 0.5, seeds 0-2, 150 steps), so this
gives the rows `rna theory check --settings 4` computes, from those same runs.

Usage (repository root): python experiments/miniature/theory_from_grid.py runs/miniature/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rna_theory.claims import Budget
from rna_theory.commands.theory import table
from rna_train.studies.miniature.experiment import Results
from rna_train.studies.miniature.theory import (
    backdoor,
    build,
    certified_vs_measured,
    first_order_vs_measured,
    trigger_latents,
)


def main() -> int:
    """Print the verifier table and write the rows as JSON next to the summary."""
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/miniature/summary.json")
    doc = json.loads(path.read_text())
    setting = build(0)
    setting.runs[False] = Results(doc["runs"], doc["seconds"])
    budget = Budget(quick=False)
    rows = [r for fn in (trigger_latents, certified_vs_measured, first_order_vs_measured, backdoor)
            for r in fn(setting, budget)]
    for r in rows:
        r.setting_name = setting.name
    data = [r.to_dict() for r in rows]
    out = path.with_name("theory_setting4.json")
    out.write_text(json.dumps({"source": str(path), "results": data}, indent=2) + "\n")
    sys.stdout.write(table(data) + f"\n\nwritten to {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
