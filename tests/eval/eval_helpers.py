"""Shared helpers for the evaluation tests: run one ``rna`` subcommand in-process."""

from __future__ import annotations

import argparse
import importlib

from rna_theory.errors import RNAError


def rna(*argv: str) -> int:
    """Run ``rna ARGV`` through the command's own parser; RNAError propagates to the test.

    Uses only the named command's module so these tests do not depend on other subcommands.
    """
    from rna_train.cli import COMMANDS

    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"rna {name}")
    module.add_arguments(parser)
    args = parser.parse_args(list(argv[1:]))
    args.command = name
    return module.run(args)


__all__ = ["RNAError", "rna"]
