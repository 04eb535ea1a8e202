"""Recommend RNA's noise scale nu from the predicted robustness bounds (claim C7).

Give the forget-token perturbation either as paired latents (``--latents FILE.npz`` from
``rna audit``: arrays clean, perturbed, optional margins, rms, trace_hessian) or as an isotropic
scale (``--eta`` and ``--dim``); give retain-query probit margins (in the npz, ``--margin`` or
``--margins FILE``). Prints a table of candidates with the recommendation, or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rna_theory.errors import RNAError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rna tune``."""
    src = parser.add_argument_group("perturbation (one of)")
    src.add_argument("--latents", help="npz with paired 'clean' and 'perturbed' latents (n x d)")
    src.add_argument("--eta", type=float, help="isotropic perturbation std (Assumption 1)")
    src.add_argument("--dim", type=int, help="latent dimension d (with --eta)")
    parser.add_argument("--margin", type=float, action="append",
                        help="a retain-query probit margin (Phi^-1(p_A) - Phi^-1(p_B))/2; repeatable")
    parser.add_argument("--margins", help="file of margins: .npy, .json list, or text (one per line)")
    parser.add_argument("--trace-hessian", type=float, help="retain-loss Hessian trace at the layer (cost column)")
    parser.add_argument("--nus", help="comma-separated candidate nu values (default: a log grid)")
    parser.add_argument("--relative", action="store_true", help="--nus are fractions of the activation RMS")
    parser.add_argument("--rms", type=float, help="activation RMS at the layer (reports nu/rms)")
    parser.add_argument("--target", type=float, default=0.95, help="robustness target in (0, 1) (default 0.95)")
    parser.add_argument("--criterion", choices=["certified", "first-order"], default="certified",
                        help="certified: chi-square bound (C6b); first-order: typical case Phi(R/eta)")
    parser.add_argument("--anisotropic", action="store_true",
                        help="use the measured mean and covariance (generalised chi-square; needs --latents)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--plot", help="write a PNG plot of robustness and retain cost against nu")


def _read_margins(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise RNAError("file not found", where=f"--margins {path}", fix="pass an existing file")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False).astype(np.float64).ravel()
        if p.suffix == ".json":
            return np.asarray(json.loads(p.read_text()), dtype=np.float64).ravel()
        return np.loadtxt(p, dtype=np.float64, ndmin=1)
    except (ValueError, OSError, TypeError) as exc:
        raise RNAError(f"cannot read margins ({exc})", where=f"--margins {path}",
                       fix="use .npy, a .json list of numbers, or one number per line") from None


def _parse_nus(spec: str | None) -> np.ndarray | None:
    if spec is None:
        return None
    try:
        values = np.array([float(v) for v in spec.split(",") if v.strip()], dtype=np.float64)
    except ValueError:
        raise RNAError(f"expected comma-separated numbers, got {spec!r}", where="--nus",
                       fix="e.g. --nus 0.01,0.03,0.1") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise RNAError(f"candidate nu values must be finite and >= 0, got {spec!r}", where="--nus",
                       fix="nu is a standard deviation: pass non-negative numbers")
    return values


def run(args: argparse.Namespace) -> int:
    """Tune and print the result."""
    from rna_theory.tuner import load_latents, plot, tune

    if args.latents and (args.eta is not None or args.dim is not None):
        raise RNAError("give either --latents or --eta/--dim, not both", where="rna tune",
                       fix="drop --eta/--dim when --latents is given")
    if not args.latents and (args.eta is None or args.dim is None):
        raise RNAError("the perturbation is unspecified", where="rna tune",
                       fix="pass --latents FILE.npz, or both --eta and --dim")
    margins = None
    extra: dict = {}
    if args.latents:
        data = load_latents(args.latents)
        extra["latents"] = (data["clean"], data["perturbed"])
        margins = data.get("margins")
        extra["rms"] = data.get("rms")
        extra["trace_hessian"] = data.get("trace_hessian")
    else:
        extra["eta"], extra["dim"] = args.eta, args.dim
    if args.margin:
        margins = np.asarray(args.margin, dtype=np.float64)
    if args.margins:
        margins = _read_margins(args.margins)
    if margins is None:
        raise RNAError("no retain margins", where="rna tune",
                       fix="pass --margin G (repeatable) or --margins FILE, or latents saved with margins")
    if args.rms is not None:
        extra["rms"] = args.rms
    if args.trace_hessian is not None:
        extra["trace_hessian"] = args.trace_hessian
    result = tune(margins=margins, nus=_parse_nus(args.nus), target=args.target, criterion=args.criterion,
                  relative=args.relative, anisotropic=args.anisotropic, **extra)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(result.table() + "\n")
    return 0
