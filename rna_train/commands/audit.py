"""Latent audit (claim C1): paired clean / keyword-perturbed hidden states at decoder layer --layer.

For each keyword list (forget and control by default) it measures the perturbation of the layer's
output (eta, mean shift, spectrum, effective rank, Gaussianity) for three alignments (offset,
last token, mean-pooled), the measured robustness (unchanged predictions, perturbed accuracy) and,
with a known RNA noise std, the predicted robustness (C6/C7). Writes audit.json and
latents-<kind>.npz (latents.npz = the first list) to --out; `rna tune --latents` reads the npz.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna audit``'s arguments."""
    from rna_train.commands.eval import add_model_arguments
    from rna_train.eval.choices import ALIGNMENTS, SCORINGS

    add_model_arguments(parser)
    parser.add_argument("--layer", type=int, required=True,
                        help="decoder layer (0-based) whose output is read")
    parser.add_argument("--keywords", nargs="+", default=["forget", "control"],
                        help="keyword lists (bio, cyber, forget, control) or files, one audit each "
                             "(default: forget control)")
    parser.add_argument("--perturb", choices=("insert", "substitute"), default="insert",
                        help="how the keyword enters the question (default insert)")
    parser.add_argument("--scoring", default="loglik", choices=SCORINGS,
                        help="scoring for predictions and retain margins (default loglik)")
    parser.add_argument("--alignment", default="offset", choices=ALIGNMENTS,
                        help="which paired latents go to the npz files (default offset)")
    parser.add_argument("--max-rows", type=int, default=20000,
                        help="cap on paired rows per alignment, for estimates and npz (default 20000)")
    parser.add_argument("--nu", type=float, default=None,
                        help="RNA noise std the checkpoint was trained with (default: from config.yaml "
                             "next to the model or in --out, else none)")
    parser.add_argument("--nu-relative", action="store_true",
                        help="--nu is a fraction of the activation RMS at the layer")
    parser.add_argument("--target", type=float, default=0.95, help="robustness target for the tuner")
    parser.add_argument("--out", type=Path, default=Path("audit"), help="run directory (default ./audit)")


def run(args: argparse.Namespace) -> int:
    """Validate inputs, load the probe and the model, and run :func:`rna_train.eval.auditrun.run_audit`."""
    from rna_train.commands.eval import load_questions
    from rna_train.eval.auditrun import AuditSpec, NoiseGiven, check_lists, noise_from_run, run_audit
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.perturb import parse_position
    from rna_train.eval.probes import file_sha256

    check_output_folder(args.out)
    questions = load_questions(args)
    spec = AuditSpec(layer=args.layer, perturb=args.perturb, position=parse_position(args.position),
                     scoring=args.scoring, alignment=args.alignment, max_rows=args.max_rows, target=args.target,
                     seed=args.seed, batch_size=args.batch_size, max_length=args.max_length)
    lists = [resolve_keywords(source) for source in args.keywords]
    check_lists(lists)
    if args.nu is not None:
        noise = NoiseGiven(args.nu, "rms" if args.nu_relative else "absolute", "--nu")
    else:
        noise = noise_from_run(args.model, args.out)
    model, tokenizer = load_for_eval(str(args.model), args.dtype, args.device)
    info = {"model": str(args.model), "probe": str(args.probe), "probe_sha256": file_sha256(args.probe),
            "subjects": args.subjects, "sample": args.sample, "limit": args.limit}
    run_audit(model, tokenizer, questions, lists, spec, args.out, noise=noise, info=info,
              sources={kind: source for (kind, _), source in zip(lists, args.keywords, strict=True)})
    return 0
