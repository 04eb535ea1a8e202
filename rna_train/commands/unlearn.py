"""Unlearn forget corpora from a causal LM, optionally with RNA, as a YAML config describes.

Config keys, methods, outputs: docs/training.md; method options: `rna methods`.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  rna unlearn --config experiments/configs/zephyr_rmu_rna.yaml train.steps=300 rna.noise=0.02
  rna unlearn --config experiments/configs/tiny_llama_rmu.yaml output_dir=/tmp/tiny
  rna unlearn --config C --resume     # continue from the last checkpoint in output_dir
  accelerate launch --config_file experiments/accelerate/ddp.yaml -m rna_train.cli unlearn --config C
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config``, ``--resume`` and the ``key=value`` overrides."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in output_dir (same config)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, values parsed as YAML (train.lr=2e-5 data.forget.0.weight=2)")


def run(args: argparse.Namespace) -> int:
    """Validate the config, train, and print the output folder."""
    import logging

    from rna_train.config import load_config
    from rna_train.trainer import train

    cfg, options = load_config(args.config, args.overrides)
    result = train(cfg, options, resume=args.resume)
    logging.getLogger(__name__).info("outputs in %s", result.output_dir)
    return 0
