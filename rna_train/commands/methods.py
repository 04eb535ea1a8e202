"""List the unlearning methods with their options and defaults."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` for machine-readable output."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print every registered method, its summary and its options."""
    import json
    import sys

    from rna_train.config import describe
    from rna_train.methods import available

    methods = available()
    if args.json:
        data = {name: {"summary": cls.summary,
                       "options": {n: {"type": tp, "default": d, "help": h}
                                   for n, tp, d, h in describe(cls.Options)}}
                for name, cls in methods.items()}
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return 0
    lines = []
    for name, cls in methods.items():
        lines.append(f"{name}: {cls.summary}")
        for opt, tp, default, help_text in describe(cls.Options):
            lines.append(f"    {opt:<16} {tp:<14} default {default!r:<10} {help_text}")
        lines.append("")
    sys.stdout.write("\n".join(lines))
    return 0
