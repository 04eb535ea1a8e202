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
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rna audit``'s arguments."""
    from rna_train.commands.eval import add_model_arguments
    from rna_train.eval.audit import ALIGNMENTS
    from rna_train.eval.scoring import SCORINGS

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


def _noise(args: argparse.Namespace, rms: float) -> dict[str, Any]:
    """Absolute nu from --nu or the trainer's config.yaml, and where it came from."""
    from rna_theory.errors import check_finite
    from rna_train.eval.runinfo import find_config, read_config, training_info

    if args.nu is not None:
        nu = check_finite(args.nu, "--nu", minimum=0.0)
        relative = "rms" if args.nu_relative else "absolute"
        source = "--nu"
    else:
        path = find_config(args.model, args.out)
        info = training_info(read_config(path)) if path else {"nu": None}
        if info["nu"] is None:
            return {"nu": None, "source": None}
        nu, relative, source = info["nu"], info["relative_to"], str(path)
    absolute = nu * rms if relative == "rms" else nu
    return {"nu": absolute, "nu_given": nu, "relative_to": relative, "source": source}


def _margin_summary(margins: Any) -> dict[str, float]:
    import numpy as np

    return {"n": int(margins.size), "mean": float(np.mean(margins)), "median": float(np.median(margins)),
            "min": float(np.min(margins)), "max": float(np.max(margins)),
            "fraction_nonpositive": float(np.mean(margins <= 0))}


def run(args: argparse.Namespace) -> int:
    """Validate inputs, collect paired latents per keyword list, estimate, predict and write."""
    from rna_theory.errors import RNAError, check_int, check_probability
    from rna_train.commands.eval import load_questions
    from rna_train.eval.audit import AUDIT_FORMAT, collect_latents, estimate, save_latents, subsample_rows
    from rna_train.eval.evaluate import now, write_json
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.metrics import summarize
    from rna_train.eval.perturb import parse_position, perturb_questions
    from rna_train.eval.probes import file_sha256
    from rna_train.eval.robustness import (
        default_nu_grid,
        measured_robustness,
        predicted_robustness,
        prediction_curve,
        probit_margins,
    )
    from rna_train.eval.scoring import score_questions

    questions = load_questions(args)
    check_int(args.layer, "--layer", minimum=0)
    check_int(args.max_rows, "--max-rows", minimum=2)
    check_probability(args.target, "--target")
    position = parse_position(args.position)
    lists = [resolve_keywords(spec) for spec in args.keywords]
    kinds = [k for k, _ in lists]
    if len(set(kinds)) != len(kinds):
        raise RNAError(f"keyword lists repeat a name: {kinds}", where="--keywords", fix="name each list once")
    plans = {kind: perturb_questions(questions, words, mode=args.perturb, seed=args.seed, position=position)
             for kind, words in lists}
    model, tokenizer = load_for_eval(str(args.model), args.dtype, args.device)
    opts = {"batch_size": args.batch_size, "max_length": args.max_length}
    clean = score_questions(model, tokenizer, questions, [args.scoring], **opts)
    clean_pred = [c.prediction(args.scoring) for c in clean]
    answers = [q.answer for q in questions]
    margins = probit_margins([c.probabilities(args.scoring) for c in clean])
    payload: dict[str, Any] = {
        "format": AUDIT_FORMAT, "created": now(), "model": str(args.model), "probe": str(args.probe),
        "probe_sha256": file_sha256(args.probe), "subjects": args.subjects, "sample": args.sample,
        "limit": args.limit, "n_questions": len(questions), "layer": args.layer,
        "perturbation": {"mode": args.perturb, "position": position, "seed": args.seed},
        "scoring": args.scoring, "alignment": args.alignment,
        "clean": summarize([p == y for p, y in zip(clean_pred, answers, strict=True)],
                           [q.subject for q in questions]),
        "margins": _margin_summary(margins), "keywords": {},
    }
    for (kind, words), spec in zip(lists, args.keywords, strict=True):
        pairs = plans[kind]
        pert = score_questions(model, tokenizer, [p.perturbed for p in pairs], [args.scoring], **opts)
        collected = collect_latents(model, tokenizer, pairs, args.layer, **opts)
        payload.setdefault("dim", collected["dim"])
        payload.setdefault("rms", collected["rms"])
        # the estimates use exactly the rows that go to the npz, so `rna tune` reproduces them
        latents = {a: subsample_rows(c, p, args.max_rows, args.seed) for a, (c, p) in collected["latents"].items()}
        estimators = {a: estimate(c, p, args.seed) for a, (c, p) in latents.items()}
        clean_z, pert_z = latents[args.alignment]
        meta = {"model": str(args.model), "layer": args.layer, "keyword_kind": kind, "keywords": spec,
                "alignment": args.alignment, "seed": args.seed, "mode": args.perturb, "scoring": args.scoring}
        npz = save_latents(args.out / f"latents-{kind}.npz", clean_z, pert_z, margins=margins,
                           rms=collected["rms"], meta=meta)
        entry: dict[str, Any] = {
            "spec": spec, "keywords": words, "latents": npz.name,
            "measured": measured_robustness(clean_pred, [c.prediction(args.scoring) for c in pert], answers),
            "alignment_check": collected["alignment_check"], "estimators": estimators,
        }
        est = estimators[args.alignment]
        if "eta" in est:
            eta, dim = est["eta"], est["dim"]
            noise = _noise(args, collected["rms"])
            # without noise (nu unknown or 0) the smoothed-head bounds make no prediction
            at_nu = predicted_robustness(margins, eta, dim, noise["nu"]) if noise["nu"] else None
            entry["predicted"] = {
                "noise": noise,
                "at_nu": at_nu,
                "curve": prediction_curve(margins, eta, dim, default_nu_grid(eta, collected["rms"])),
            }
            entry["tuner"] = _tune(margins, eta, dim, collected["rms"], args.target)
        payload["keywords"][kind] = entry
        log.info("%s: eta %.4g (%s), unchanged %.3f, perturbed accuracy %.3f", kind,
                 est.get("eta", float("nan")), args.alignment, entry["measured"]["unchanged"]["rate"],
                 entry["measured"]["perturbed_accuracy"]["rate"])
    _alias(args.out / f"latents-{kinds[0]}.npz", args.out / "latents.npz")
    write_json(args.out / "audit.json", payload)
    log.info("wrote %s and %d latent file(s)", args.out / "audit.json", len(kinds))
    return 0


def _alias(source: Path, alias: Path) -> None:
    """Make ``alias`` the same file as ``source`` (hard link, else a copy): latents can be large."""
    alias.unlink(missing_ok=True)
    try:
        os.link(source, alias)
    except OSError:
        shutil.copyfile(source, alias)


def _tune(margins: Any, eta: float, dim: int, rms: float, target: float) -> dict[str, Any]:
    """The theory tuner's recommendation (C7) for this checkpoint, or the reason it has none."""
    from rna_theory.errors import RNAError
    from rna_theory.tuner import tune

    try:
        return tune(margins=margins, eta=eta, dim=dim, rms=rms, target=target).to_dict()
    except RNAError as exc:
        log.warning("tuner: %s", exc)
        return {"error": str(exc)}
