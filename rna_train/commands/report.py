"""Markdown + self-contained HTML report from `rna eval` / `rna audit` run directories.

Plots accuracy clean vs. perturbed per run, latent-difference histograms against the fitted
Gaussian, predicted vs. measured robustness, and a nu ablation when runs differ in nu; writes
report.md (with figures/*.png) and report.html (figures embedded) to --out.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna report``'s arguments."""
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="directories written by rna eval / rna audit (and the trainer)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--title", default="RNA robustness report", help="report title")


def run(args: argparse.Namespace) -> int:
    """Build the report and log where it was written."""
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.report import write_report

    check_output_folder(args.out)
    md, page = write_report(args.runs, args.out, args.title)
    log.info("wrote %s and %s", md, page)
    return 0
