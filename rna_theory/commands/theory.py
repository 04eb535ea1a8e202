"""Check the theory's claims numerically: predicted vs measured per claim and setting, with verdicts.

Verdicts: holds (agreement within a 1-1e-6 interval, or an inequality satisfied), approximate
(agreement within the stated order of an expansion), violated (a confident disagreement: a
finding, e.g. C2's inequality failing at a concave point), inconclusive. Violations are reported,
not treated as errors: the exit status is 0 unless the arguments are invalid (2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path

from rna_theory.errors import RNAError, check_int

log = logging.getLogger("rna.theory")

#: Version tag of the ``--json`` document; bump on incompatible changes (docs/theory.md).
SCHEMA = "rna.theory.check/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rna theory``."""
    parser.add_argument("action", choices=["check"], help="check: run the claim verifiers")
    parser.add_argument("--claims", help="comma-separated claim ids, e.g. C2,C6 (default: all)")
    parser.add_argument("--settings", help="comma-separated setting indices, e.g. 1,3 (default: 1,2,3; opt-in: "
                        "4, the miniature transformer world, trains models; 5, the SmolLM2 study, reads "
                        "docs/data/smollm2_summary.json and smollm2_theory.json)")
    parser.add_argument("--quick", action="store_true", help="small Monte Carlo sizes (a smoke check, < 10 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every generator and Monte Carlo draw")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    parser.add_argument("--out", help="also write the JSON document to this file")


def _parse_settings(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    try:
        values = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise RNAError(f"expected comma-separated integers, got {spec!r}", where="--settings",
                       fix="e.g. --settings 1,2,3") from None
    for v in values:
        check_int(v, "--settings", minimum=1)
    if not values:
        raise RNAError("no setting given", where="--settings", fix="e.g. --settings 1,2,3")
    return values


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.4g}"


def table(rows: list[dict]) -> str:
    """Human-readable table of result rows (as produced by ``ClaimResult.to_dict``)."""
    header = f"{'claim':<5} {'set':>3}  {'quantity':<58} {'predicted':>10} {'measured':>10}  {'interval':<22} verdict"
    lines = [header, "-" * len(header)]
    for r in rows:
        ci = f"[{_fmt(r['ci'][0])}, {_fmt(r['ci'][1])}]" if r["ci"] else "-"
        lines.append(f"{r['claim']:<5} {r['setting']:>3}  {r['quantity'][:58]:<58} {_fmt(r['predicted']):>10} "
                     f"{_fmt(r['measured']):>10}  {ci:<22} {r['verdict']}")
    return "\n".join(lines)


def _load_plugins(settings: list[int] | None) -> None:
    """Import the plugin modules of the chosen settings (they register settings and verifiers)."""
    import importlib

    from rna_theory.claims import PLUGIN_SETTINGS

    for index in settings or ():
        if index in PLUGIN_SETTINGS:
            try:
                importlib.import_module(PLUGIN_SETTINGS[index])
            except ImportError as exc:
                raise RNAError(f"setting {index} is unavailable ({exc})", where="--settings",
                               fix="install rna with its trainer (pip install -e .) or drop this setting") from None


def run(args: argparse.Namespace) -> int:
    """Run the selected verifiers and print a table or the JSON document."""
    from rna_theory.claims import Budget, parse_claims, run_checks

    chosen = _parse_settings(args.settings)
    _load_plugins(chosen)  # plugin settings register their claims (setting 4: C8) before parsing
    claims = parse_claims(args.claims)
    start = time.perf_counter()
    rows = run_checks(claims, settings=chosen, budget=Budget(quick=args.quick, seed=args.seed),
                      progress=lambda msg: log.info("checking %s", msg))
    if not rows:
        raise RNAError("no verifier matched the chosen claims and settings", where="--settings",
                       fix="settings 1-3 cover C1-C7; setting 4 (C1, C6-C8) needs rna_train's tiny transformer; "
                           "setting 5 (C7, C8) the SmolLM2 study's summaries")
    elapsed = time.perf_counter() - start
    data = [r.to_dict() for r in rows]
    doc = {"schema": SCHEMA, "seed": args.seed, "quick": args.quick, "claims": claims,
           "settings": sorted({r["setting"] for r in data}), "elapsed_s": round(elapsed, 2),
           "summary": dict(Counter(r["verdict"] for r in data)), "results": data}
    text = json.dumps(doc, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(table(data) + "\n")
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(doc["summary"].items()))
        sys.stdout.write(f"\n{len(data)} checks in {elapsed:.1f} s ({summary}); "
                         "'violated' rows are findings, see docs/theory.md\n")
    return 0
