"""Claim C7: choose RNA's noise scale from the predicted bounds instead of a grid search.

Model. A retain query whose smoothed head has top-two probabilities (p_A, p_B) has the probit
margin g = (Phi^-1(p_A) - Phi^-1(p_B))/2 and, when the head is smoothed with noise nu, the
certified radius R = nu * g (C6a). The forget-token perturbation eps (Assumption 1: N(0, eta^2 I),
or the measured N(mu, Sigma)) leaves the prediction unchanged with probability at least
P(||eps|| < R) (C6b, "certified"), and typically Phi(R / eta) (first order, exact for a linear
boundary). Training with noise nu costs (nu^2 / 2) tr H of clean retain loss (C3). The tuner
evaluates both per candidate nu and recommends the smallest nu whose predicted robustness, averaged
over retain queries, meets the target. The margins are treated as fixed across nu: an assumption
that holds while nu is small against the retain data's own margins, which the retain-cost column
watches.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from rna_theory.bounds import certified_probability, first_order_probability
from rna_theory.errors import RNAError, check_array, check_finite, check_int, check_probability
from rna_theory.estimators import assumption1
from rna_theory.noise import NoiseSchedule
from rna_theory.plotting import save_figure
from rna_theory.predictions import retain_cost

log = logging.getLogger(__name__)

CRITERIA = ("certified", "first-order")


@dataclasses.dataclass
class TuneRow:
    """Predictions for one candidate noise scale."""

    nu: float
    nu_relative: float | None
    radius_median: float
    certified: float
    first_order: float
    retain_cost: float | None
    meets_target: bool


@dataclasses.dataclass
class TuneResult:
    """Per-candidate predictions and the recommendation."""

    rows: list[TuneRow]
    recommended_nu: float | None
    recommended_nu_relative: float | None
    grid_choice: float | None
    target: float
    criterion: str
    eta: float
    dim: int
    rms: float | None
    anisotropic: bool
    n_margins: int
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (schema in docs/theory.md, section "rna tune --json")."""
        out = dataclasses.asdict(self)
        out["rows"] = [dataclasses.asdict(r) for r in self.rows]
        return out

    def table(self) -> str:
        """Human-readable table of the candidates and the recommendation."""
        head = f"{'nu':>10} {'nu/rms':>8} {'R median':>9} {'certified':>10} {'1st-order':>10} {'retain cost':>12}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            rel = f"{r.nu_relative:8.4f}" if r.nu_relative is not None else f"{'-':>8}"
            cost = f"{r.retain_cost:12.4g}" if r.retain_cost is not None else f"{'-':>12}"
            mark = " *" if r.meets_target else ""
            lines.append(f"{r.nu:10.4g} {rel} {r.radius_median:9.4g} {r.certified:10.4f} "
                         f"{r.first_order:10.4f} {cost}{mark}")
        if self.recommended_nu is None:
            lines.append(f"no nu reaches {self.criterion} robustness {self.target}: {self.note}")
        else:
            rel = (f" ({self.recommended_nu_relative:.4g} x activation RMS)"
                   if self.recommended_nu_relative is not None else "")
            lines.append(f"recommended nu = {self.recommended_nu:.4g}{rel} for {self.criterion} "
                         f"robustness >= {self.target} (eta = {self.eta:.4g}, d = {self.dim}); {self.note}")
        return "\n".join(lines)


def closed_form_nu(eta: float, dim: int, margin: float, target: float, criterion: str = "certified") -> float:
    """Smallest nu with predicted robustness >= target for one query, isotropic eps (closed form).

    certified: nu = eta * sqrt(F^-1_chi2_d(target)) / g; first-order: nu = eta * Phi^-1(target) / g.
    """
    eta = check_finite(eta, "eta", minimum=0.0)
    dim = check_int(dim, "dim", minimum=1)
    margin = check_finite(margin, "margin", minimum=0.0, strict=True,
                          fix="the query must be classified correctly (p_A > p_B) for a certificate")
    target = check_probability(target, "target")
    _check_criterion(criterion)
    q = math.sqrt(stats.chi2.ppf(target, dim)) if criterion == "certified" else stats.norm.ppf(target)
    return max(eta * q / margin, 0.0)


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise RNAError(f"unknown criterion {criterion!r}", where="criterion", fix=f"use one of {CRITERIA}")


#: Draws of ||eps||^2 behind the anisotropic prediction (error <= 0.005 at 3 standard errors).
ANISOTROPIC_SAMPLES = 100_000


class _Predictor:
    """Mean predicted robustness over the retain margins as a function of absolute nu.

    The anisotropic case (eps ~ N(mu, Sigma), a generalised chi-square) is evaluated from one
    seeded sample of ||eps||^2 (ANISOTROPIC_SAMPLES draws: a Monte Carlo estimate with standard error
    <= 0.5 / sqrt(ANISOTROPIC_SAMPLES) per query, not an exact value), so the hundreds of evaluations a
    solve needs cost a sorted lookup each; :func:`rna_theory.bounds.anisotropic_certified_probability`
    gives exact single values.
    """

    def __init__(self, margins: np.ndarray, eta: float, dim: int, mean: np.ndarray | None,
                 cov: np.ndarray | None) -> None:
        self.margins, self.eta, self.dim = margins, eta, dim
        #: Queries with margin <= 0 have no certificate and count as failures under both criteria.
        self.certifiable = margins > 0
        self.sq_norms: np.ndarray | None = None
        if mean is not None and cov is not None:
            evals, evecs = np.linalg.eigh(cov)
            scale, shift = np.sqrt(np.clip(evals, 0.0, None)), evecs.T @ mean
            rng = np.random.default_rng(0)
            rows = max(1, 2**22 // max(evals.size, 1))  # draws in blocks: memory O(d * rows), not O(d * samples)
            blocks = [np.sum((rng.standard_normal((min(rows, ANISOTROPIC_SAMPLES - start), evals.size)) * scale
                              + shift) ** 2, axis=1) for start in range(0, ANISOTROPIC_SAMPLES, rows)]
            self.sq_norms = np.sort(np.concatenate(blocks))

    def _mean(self, probabilities: np.ndarray) -> float:
        return float(np.mean(np.where(self.certifiable, probabilities, 0.0)))

    def certified(self, nu: float) -> float:
        radii = nu * np.clip(self.margins, 0, None)
        if self.sq_norms is not None:
            return self._mean(np.searchsorted(self.sq_norms, radii**2, side="left") / self.sq_norms.size)
        return self._mean(certified_probability(radii, self.eta, self.dim))

    def first_order(self, nu: float) -> float:
        return self._mean(first_order_probability(nu * np.clip(self.margins, 0, None), self.eta))

    def value(self, nu: float, criterion: str) -> float:
        return self.certified(nu) if criterion == "certified" else self.first_order(nu)


def tune(*, margins: Any, eta: float | None = None, dim: int | None = None,
         latents: tuple[Any, Any] | None = None, anisotropic: bool = False, trace_hessian: float | None = None,
         nus: Any = None, target: float = 0.95, criterion: str = "certified", rms: float | None = None,
         relative: bool = False) -> TuneResult:
    """Predicted robustness and retain cost per candidate nu, and the recommended nu.

    Args:
        margins: per retain query probit margin g = (Phi^-1(p_A) - Phi^-1(p_B))/2 (see
            :func:`rna_theory.bounds.probit_margin`); queries with g <= 0 are uncertifiable and count
            as failures, which caps the reachable robustness.
        eta, dim: isotropic forget-token perturbation scale and latent dimension; or
        latents: (clean, perturbed) paired arrays, from which eta, d (and with ``anisotropic`` the
            mean and covariance for the generalised chi-square) are estimated (C1).
        trace_hessian: retain-loss Hessian trace at the noise layer (Hutchinson), for the cost column.
        nus: candidate values (absolute, or fractions of ``rms`` when ``relative``); default a log grid.
        target: robustness to reach, in (0, 1).
        criterion: ``certified`` (C6b, rigorous under Assumption 1) or ``first-order`` (typical).
        rms: activation RMS at the layer; reports nu relative to it (required with ``relative``).
    """
    target = check_probability(target, "target")
    _check_criterion(criterion)
    g = check_array(margins, "margins", ndim=1)
    mean = cov = None
    switched = ""
    if latents is not None:
        if eta is not None or dim is not None:
            raise RNAError("give either latents or eta and dim, not both", where="tune",
                           fix="drop --eta/--dim when --latents is given")
        est = assumption1(*latents)
        eta, dim = est.eta, est.dim
        if not anisotropic and _shift_matters(est.mean_norm, eta, dim, est.n):
            anisotropic = True
            switched = (f"the latents' mean shift ||mu|| = {est.mean_norm:.3g} is significant against "
                        f"eta sqrt(d) = {eta * math.sqrt(dim):.3g}, which the isotropic model N(0, eta^2 I) "
                        "ignores: predictions use the measured N(mu, Sigma) (anisotropic). ")
            log.warning("tune: %s", switched.strip())
        if anisotropic:
            diffs = np.asarray(latents[1], dtype=np.float64) - np.asarray(latents[0], dtype=np.float64)
            mean, cov = est.mean, np.cov(diffs, rowvar=False).reshape(dim, dim)
    elif anisotropic:
        raise RNAError("the anisotropic prediction needs paired latents", where="anisotropic",
                       fix="pass --latents FILE.npz")
    if eta is None or dim is None:
        raise RNAError("the perturbation scale is unknown", where="tune",
                       fix="pass --eta and --dim, or --latents FILE.npz")
    eta = check_finite(eta, "eta", minimum=0.0)
    dim = check_int(dim, "dim", minimum=1)
    if rms is not None:
        rms = check_finite(rms, "rms", minimum=0.0, strict=True)
    if relative and rms is None:
        raise RNAError("relative candidates need the activation RMS", where="rms",
                       fix="pass --rms (or latents saved with an rms entry)")
    if trace_hessian is not None:
        trace_hessian = check_finite(trace_hessian, "trace_hessian")
    pred = _Predictor(g, eta, dim, mean, cov)
    scale = rms if relative else 1.0
    if nus is None:
        positive = g[g > 0]
        top = closed_form_nu(max(eta, 1e-12), dim, float(np.median(positive)), min(target + (1 - target) / 2,
                             0.999), criterion) if positive.size else 1.0
        candidates = np.geomspace(top / 100, top * 3, 16) if top > 0 else np.array([0.0])
    else:
        candidates = check_array(nus, "nus", ndim=1) * scale
        if np.any(candidates < 0):
            raise RNAError("candidate nu values must be >= 0 (nu is a standard deviation)", where="nus",
                           fix="pass non-negative values")
        candidates = np.sort(candidates)
    rows = []
    for nu in candidates:
        cert, first = pred.certified(nu), pred.first_order(nu)
        value = cert if criterion == "certified" else first
        rows.append(TuneRow(nu=float(nu), nu_relative=float(nu / rms) if rms else None,
                            radius_median=float(np.median(nu * np.clip(g, 0, None))), certified=cert,
                            first_order=first,
                            retain_cost=float(retain_cost(trace_hessian, nu)) if trace_hessian is not None else None,
                            meets_target=value >= target))
    grid_choice = next((r.nu for r in rows if r.meets_target), None)
    recommended, note = _solve(pred, target, criterion, g, eta)
    note = switched + note
    return TuneResult(rows=rows, recommended_nu=recommended,
                      recommended_nu_relative=(recommended / rms) if (recommended is not None and rms) else None,
                      grid_choice=grid_choice, target=target, criterion=criterion, eta=eta, dim=dim, rms=rms,
                      anisotropic=mean is not None, n_margins=int(g.size), note=note)


def _shift_matters(mean_norm: float, eta: float, dim: int, n: int) -> bool:
    """Whether a measured mean shift changes ||eps||^2 beyond the isotropic model: its noncentrality
    ||mu||^2 / eta^2 exceeds one standard deviation sqrt(2 d) of the central chi-square, and the shift
    is real (over 5 standard errors eta sqrt(d / n) of the mean), or the perturbation is a pure shift."""
    if eta <= 1e-9 * mean_norm:
        return mean_norm > 0.0
    return mean_norm**2 > eta**2 * math.sqrt(2.0 * dim) and mean_norm > 5.0 * eta * math.sqrt(dim / max(n, 1))


def _solve(pred: _Predictor, target: float, criterion: str, g: np.ndarray, eta: float) -> tuple[float | None, str]:
    """Smallest nu with mean predicted robustness >= target (robustness is non-decreasing in nu)."""
    ceiling = float(np.mean(g > 0))
    if ceiling < target or (ceiling == target and eta > 0.0):
        return None, (f"predicted robustness saturates at {ceiling:.3f} (queries with margin <= 0 are not "
                      f"certifiable and count as failures), so no noise scale reaches {target}; improve the retain "
                      "fit or lower the target")
    if eta == 0.0 and pred.sq_norms is None:
        return 0.0, "eta = 0: the perturbation is absent; no noise is needed"
    if pred.value(0.0, criterion) >= target:
        return 0.0, "the target is met without noise"
    # Every certifiable query's probability tends to 1 as nu grows, so a target below the ceiling is
    # met at a finite nu; start where the smallest margin's radius equals the perturbation's norm.
    shift = math.sqrt(float(np.median(pred.sq_norms))) if pred.sq_norms is not None else 0.0
    spread = eta * math.sqrt(pred.dim) + shift
    hi = max(spread, 1e-300) / float(g[g > 0].min())
    for _ in range(2000):
        if pred.value(hi, criterion) >= target:
            break
        hi *= 2
    else:
        return None, "the predicted robustness does not reach the target at any representable nu"
    lo = 0.0
    nu = optimize.brentq(lambda v: pred.value(v, criterion) - target, lo, hi, xtol=1e-12 * hi, rtol=1e-10)
    while pred.value(nu, criterion) < target:  # brentq may land just below the root
        nu = nu * (1 + 1e-9) + 1e-300
    return float(nu), "smallest nu meeting the target (solved exactly, not limited to the grid)"


def schedule_robustness(schedule: NoiseSchedule, total_steps: int, *, margins: Any, eta: float, dim: int,
                        criterion: str = "certified", rms: float | None = None) -> dict[str, Any]:
    """Predicted robustness along a noise schedule, using the very object the trainer consumes.

    The model at the end of training is smoothed at the schedule's final scale; the curve shows
    what an early stop would give.
    """
    total_steps = check_int(total_steps, "total_steps", minimum=1)
    schedule = schedule.with_total_steps(total_steps)
    _check_criterion(criterion)
    g = check_array(margins, "margins", ndim=1)
    pred = _Predictor(g, check_finite(eta, "eta", minimum=0.0), check_int(dim, "dim", minimum=1), None, None)
    if schedule.relative_to == "robust":
        raise RNAError("the tuner evaluates absolute or RMS-relative schedules; a robust-scale one has no "
                       "known absolute size here", where="relative_to", fix="use relative_to: rms or absolute")
    if schedule.relative_to == "rms" and rms is None:
        raise RNAError("an RMS-relative schedule needs the activation RMS", where="rms", fix="pass rms")
    scale = rms if schedule.relative_to == "rms" else 1.0
    steps = np.unique(np.linspace(0, total_steps, min(total_steps + 1, 101)).astype(int))
    nus = [schedule.nu_at(int(s)) * scale for s in steps]
    robust = [pred.value(nu, criterion) for nu in nus]
    return {"steps": steps.tolist(), "nu": nus, "robustness": robust, "final_nu": nus[-1],
            "final_robustness": robust[-1], "criterion": criterion}


def load_latents(path: str | Path) -> dict[str, Any]:
    """Read the audit's npz (clean, perturbed, optional margins, rms, trace_hessian, meta)."""
    path = Path(path)
    if not path.is_file():
        raise RNAError("file not found", where=str(path), fix="pass the latents.npz written by `rna audit`")
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise RNAError(f"not a readable .npz file ({exc})", where=str(path),
                       fix="pass the latents.npz written by `rna audit` (numpy savez format)") from None
    for key in ("clean", "perturbed"):
        if key not in content:
            raise RNAError(f"missing array {key!r} (found {sorted(content)})", where=str(path),
                           fix="the file needs paired arrays 'clean' and 'perturbed' of shape (n, d)")
    out: dict[str, Any] = {"clean": content["clean"], "perturbed": content["perturbed"]}
    for key in ("margins",):
        if key in content:
            out[key] = np.asarray(content[key], dtype=np.float64).ravel()
    for key in ("rms", "trace_hessian"):
        if key in content:
            value = np.asarray(content[key])
            if value.size != 1 or not np.issubdtype(value.dtype, np.number):
                raise RNAError(f"{key!r} must be one number, got an array of shape {value.shape} ({value.dtype})",
                               where=str(path), fix=f"save {key} as a scalar (np.savez(..., {key}=1.0))")
            out[key] = float(value.reshape(()))
    if "meta" in content:
        try:
            out["meta"] = json.loads(str(content["meta"]))
        except json.JSONDecodeError:
            out["meta"] = str(content["meta"])
    return out


def tune_from_file(path: str | Path, target: float = 0.95, **kwargs: Any) -> TuneResult:
    """:func:`tune` on the npz written by ``rna audit``; keyword arguments override its entries."""
    data = load_latents(path)
    margins = kwargs.pop("margins", data.get("margins"))
    if margins is None:
        raise RNAError("no retain margins in the file and none given", where=str(path),
                       fix="rerun `rna audit` with a retain probe, or pass margins")
    kwargs.setdefault("trace_hessian", data.get("trace_hessian"))
    kwargs.setdefault("rms", data.get("rms"))
    return tune(margins=margins, latents=(data["clean"], data["perturbed"]), target=target, **kwargs)


def plot(result: TuneResult, path: str | Path) -> Path:
    """Save predicted robustness (both criteria) and retain cost against nu as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    nus = [r.nu for r in result.rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(x=nus, y=[r.certified for r in result.rows], marker="o", ax=ax, label="certified (C6b)")
    sns.lineplot(x=nus, y=[r.first_order for r in result.rows], marker="s", ax=ax, label="first order")
    ax.axhline(result.target, color="grey", ls="--", lw=1, label=f"target {result.target}")
    if result.recommended_nu is not None:
        ax.axvline(result.recommended_nu, color="C3", ls=":", lw=1.5, label=f"nu* = {result.recommended_nu:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("noise std nu")
    ax.set_ylabel("predicted P(prediction unchanged)")
    ax.set_ylim(-0.02, 1.02)
    if all(r.retain_cost is not None for r in result.rows):
        ax2 = ax.twinx()
        ax2.plot(nus, [r.retain_cost for r in result.rows], color="C2", alpha=0.6, label="retain cost")
        ax2.set_ylabel("predicted retain-loss increase", color="C2")
        ax2.grid(False)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"RNA noise tuning (eta={result.eta:.3g}, d={result.dim})")
    return save_figure(fig, path)
