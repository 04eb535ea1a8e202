"""The latent audit as a library function (claim C1, and C6/C7 with a known noise scale).

For each keyword list it measures the perturbation of decoder layer ``spec.layer``'s output
(eta, mean shift, spectrum, effective rank, Gaussianity) for three alignments (offset, last token,
mean-pooled), the measured robustness (unchanged predictions, perturbed accuracy) and, when the RNA
noise scale is known, the predicted robustness and the tuner's recommendation. Writes
``audit.json`` and ``latents-<kind>.npz`` (``latents.npz`` = the first list) to ``out``.
``rna audit`` parses arguments and calls :func:`run_audit`; so does :func:`rna.audit`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError, check_finite, check_int, check_probability

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AuditSpec:
    """What the audit measures and how (the ``rna audit`` options other than model and probe)."""

    layer: int
    perturb: str = "insert"
    position: str | int = "random"
    scoring: str = "loglik"
    alignment: str = "offset"
    max_rows: int = 20000
    target: float = 0.95
    seed: int = 0
    batch_size: int = 8
    max_length: int | None = None

    def __post_init__(self) -> None:
        check_int(self.layer, "layer", minimum=0)
        check_int(self.max_rows, "max_rows", minimum=2)
        check_probability(self.target, "target")


@dataclasses.dataclass(frozen=True)
class NoiseGiven:
    """The RNA noise std a checkpoint was trained with: ``nu`` (absolute or a fraction of the RMS)."""

    nu: float
    relative_to: str = "absolute"
    source: str = "given"

    def __post_init__(self) -> None:
        check_finite(self.nu, "nu", minimum=0.0)
        if self.relative_to not in ("absolute", "rms"):
            raise RNAError(f"unknown value {self.relative_to!r}", where="relative_to", fix="use absolute or rms")

    def resolve(self, rms: float) -> dict[str, Any]:
        """The absolute std at a layer of activation RMS ``rms``, and where the value came from."""
        absolute = self.nu * rms if self.relative_to == "rms" else self.nu
        return {"nu": absolute, "nu_given": self.nu, "relative_to": self.relative_to, "source": self.source}


def noise_from_run(*dirs: str | Path) -> NoiseGiven | None:
    """The noise recorded in a training run's ``config.yaml`` found in ``dirs`` (None: none / RNA off)."""
    from rna_train.eval.runinfo import find_config, read_config, training_info

    path = find_config(*dirs)
    info = training_info(read_config(path)) if path else {"nu": None}
    if info["nu"] is None:
        return None
    return NoiseGiven(info["nu"], info["relative_to"], str(path))


def check_lists(keyword_lists: Sequence[tuple[str, list[str]]]) -> list[str]:
    """The lists' kinds, refused when one repeats (each names its own npz file)."""
    kinds = [k for k, _ in keyword_lists]
    if len(set(kinds)) != len(kinds):
        raise RNAError(f"keyword lists repeat a name: {kinds}", where="--keywords", fix="name each list once")
    return kinds


def margin_summary(margins: Any) -> dict[str, float]:
    """Count, mean, median, range and share of non-positive retain margins."""
    import numpy as np

    return {"n": int(margins.size), "mean": float(np.mean(margins)), "median": float(np.median(margins)),
            "min": float(np.min(margins)), "max": float(np.max(margins)),
            "fraction_nonpositive": float(np.mean(margins <= 0))}


def run_audit(model: Any, tokenizer: Any, questions: Sequence[Any], keyword_lists: Sequence[tuple[str, list[str]]],
              spec: AuditSpec, out: Path, *, noise: NoiseGiven | None = None,
              info: dict[str, Any] | None = None, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Audit ``model`` on ``questions`` for each ``(kind, words)`` list; write and return the payload.

    ``info`` (model name, probe, its hash, sampling options) is recorded as given; ``sources`` names
    where each list came from (a packaged list's name or a file; default: its kind).
    """
    from rna_train.eval.audit import AUDIT_FORMAT
    from rna_train.eval.evaluate import now, write_json
    from rna_train.eval.keywords import check_known_keywords
    from rna_train.eval.metrics import summarize
    from rna_train.eval.perturb import parse_position, perturb_questions
    from rna_train.eval.robustness import probit_margins
    from rna_train.eval.scoring import score_questions

    kinds = check_lists(keyword_lists)
    position = parse_position(spec.position)
    plans = {kind: perturb_questions(questions, words, mode=spec.perturb, seed=spec.seed, position=position)
             for kind, words in keyword_lists}
    for kind, pairs in plans.items():
        check_known_keywords(tokenizer, [p.perturbation.keyword for p in pairs], f"--keywords {kind}")
    opts = {"batch_size": spec.batch_size, "max_length": spec.max_length}
    log.info("audit: %d questions, %d keyword list(s), layer %d", len(questions), len(keyword_lists), spec.layer)
    clean = score_questions(model, tokenizer, questions, [spec.scoring], **opts)
    clean_pred = [c.prediction(spec.scoring) for c in clean]
    answers = [q.answer for q in questions]
    margins = probit_margins([c.probabilities(spec.scoring) for c in clean])
    payload: dict[str, Any] = {
        "format": AUDIT_FORMAT, "created": now(), **(info or {}), "n_questions": len(questions),
        "layer": spec.layer, "perturbation": {"mode": spec.perturb, "position": position, "seed": spec.seed},
        "scoring": spec.scoring, "alignment": spec.alignment,
        "clean": summarize([p == y for p, y in zip(clean_pred, answers, strict=True)],
                           [q.subject for q in questions]),
        "margins": margin_summary(margins), "keywords": {},
    }
    for kind, words in keyword_lists:
        keywords = (kind, (sources or {}).get(kind, kind), words)
        payload["keywords"][kind] = _audit_list(model, tokenizer, plans[kind], keywords, spec, out, payload,
                                                clean_pred=clean_pred, answers=answers, margins=margins, noise=noise)
    _alias(out / f"latents-{kinds[0]}.npz", out / "latents.npz")
    write_json(out / "audit.json", payload)
    log.info("wrote %s and %d latent file(s)", out / "audit.json", len(kinds))
    return payload


def _audit_list(model: Any, tokenizer: Any, pairs: Sequence[Any], keywords: tuple[str, str, list[str]], spec: AuditSpec,
                out: Path, payload: dict[str, Any], *, clean_pred: list[int], answers: list[int], margins: Any,
                noise: NoiseGiven | None) -> dict[str, Any]:
    """One keyword list: perturbed scores, paired latents (npz), estimators, measured and predicted robustness."""
    from rna_train.eval.audit import collect_latents, estimate, save_latents, subsample_rows
    from rna_train.eval.robustness import (
        default_nu_grid,
        measured_robustness,
        predicted_robustness,
        prediction_curve,
    )
    from rna_train.eval.scoring import score_questions

    kind, source, words = keywords
    opts = {"batch_size": spec.batch_size, "max_length": spec.max_length}
    pert = score_questions(model, tokenizer, [p.perturbed for p in pairs], [spec.scoring], **opts)
    collected = collect_latents(model, tokenizer, pairs, spec.layer, **opts)
    payload.setdefault("dim", collected["dim"])
    payload.setdefault("rms", collected["rms"])
    # the estimates use exactly the rows that go to the npz, so `rna tune` reproduces them
    latents = {a: subsample_rows(c, p, spec.max_rows, spec.seed) for a, (c, p) in collected["latents"].items()}
    estimators = {a: estimate(c, p, spec.seed) for a, (c, p) in latents.items()}
    clean_z, pert_z = latents[spec.alignment]
    meta = {"model": str(payload.get("model")), "layer": spec.layer, "keyword_kind": kind, "keywords": source,
            "alignment": spec.alignment, "seed": spec.seed, "mode": spec.perturb, "scoring": spec.scoring}
    npz = save_latents(out / f"latents-{kind}.npz", clean_z, pert_z, margins=margins, rms=collected["rms"], meta=meta)
    entry: dict[str, Any] = {
        "spec": source, "keywords": words, "latents": npz.name,
        "measured": measured_robustness(clean_pred, [c.prediction(spec.scoring) for c in pert], answers),
        "alignment_check": collected["alignment_check"], "estimators": estimators,
    }
    est = estimators[spec.alignment]
    if "eta" in est:
        eta, dim, rms = est["eta"], est["dim"], collected["rms"]
        given = noise.resolve(rms) if noise is not None else {"nu": None, "source": None}
        # without noise (nu unknown or 0) the smoothed-head bounds make no prediction
        at_nu = predicted_robustness(margins, eta, dim, given["nu"]) if given["nu"] else None
        entry["predicted"] = {"noise": given, "at_nu": at_nu,
                              "curve": prediction_curve(margins, eta, dim, default_nu_grid(eta, rms))}
        entry["tuner"] = _tune(margins, eta, dim, rms, spec.target)
    log.info("%s: eta %.4g (%s), unchanged %.3f, perturbed accuracy %.3f", kind, est.get("eta", float("nan")),
             spec.alignment, entry["measured"]["unchanged"]["rate"], entry["measured"]["perturbed_accuracy"]["rate"])
    return entry


def _alias(source: Path, alias: Path) -> None:
    """Make ``alias`` the same file as ``source`` (hard link, else a copy): latents can be large."""
    alias.unlink(missing_ok=True)
    try:
        os.link(source, alias)
    except OSError:
        shutil.copyfile(source, alias)


def _tune(margins: Any, eta: float, dim: int, rms: float, target: float) -> dict[str, Any]:
    """The theory tuner's recommendation (C7) for this checkpoint, or the reason it has none."""
    from rna_theory.tuner import tune

    try:
        return tune(margins=margins, eta=eta, dim=dim, rms=rms, target=target).to_dict()
    except RNAError as exc:
        log.warning("tuner: %s", exc)
        return {"error": str(exc)}
