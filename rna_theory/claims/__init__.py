"""The claim registry behind ``rna theory check``.

A verifier is a function ``(setting, budget) -> list[ClaimResult]`` registered for a claim id and
the settings it applies to. Settings 1-3 are built here; setting 4 (tiny transformer) is provided
by ``rna_train`` through :func:`register_setting`, so its verifiers plug into the same table.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from rna_theory import settings as _settings
from rna_theory.errors import RNAError

VERDICTS = ("holds", "approximate", "violated", "inconclusive")
CLAIM_TITLES = {
    "C1": "Assumption 1 is measurable",
    "C2": "a latent perturbation raises the expected loss (Eq. 9)",
    "C3": "input-noise training is curvature regularisation",
    "C4": "target-mode RM noise is gradient-unbiased",
    "C5": "target-mode PO noise distils a smoothed reference",
    "C6": "robustness guarantee of the smoothed head (Eq. 13)",
    "C7": "noise-scale tuning from the bounds",
    "C8": "the backdoor view, measured",
}


@dataclasses.dataclass
class ClaimResult:
    """One row of the check: a predicted and a measured number with a verdict.

    ``ci`` is a confidence interval of the measured value at level 1 - 1e-6 (or the acceptance
    region stated in ``detail`` where the measurement is exact); ``verdict`` is one of
    :data:`VERDICTS`: ``holds`` (agreement within the interval, or an inequality satisfied),
    ``approximate`` (agreement within the stated order of an expansion), ``violated`` (a
    confident disagreement: a finding), ``inconclusive``.
    """

    claim: str
    setting: int
    quantity: str
    predicted: float | None
    measured: float | None
    ci: tuple[float, float] | None
    verdict: str
    detail: str = ""
    setting_name: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats become None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "claim": self.claim, "title": CLAIM_TITLES.get(self.claim, ""), "setting": self.setting,
            "setting_name": self.setting_name, "quantity": self.quantity,
            "predicted": clean(self.predicted), "measured": clean(self.measured),
            "ci": [clean(float(self.ci[0])), clean(float(self.ci[1]))] if self.ci else None,
            "verdict": self.verdict, "detail": self.detail, "seconds": round(self.seconds, 3),
        }


@dataclasses.dataclass(frozen=True)
class Budget:
    """Monte Carlo sizes: ``quick`` shrinks every sample count for a fast smoke check."""

    quick: bool = False
    seed: int = 0

    def n(self, full: int, quick: int) -> int:
        """Sample count for the current mode."""
        return quick if self.quick else full


Verifier = Callable[[_settings.Setting, Budget], list[ClaimResult]]
_VERIFIERS: dict[str, list[tuple[tuple[int, ...], Verifier]]] = {}
_SETTINGS: dict[int, Callable[[int], _settings.Setting]] = {
    1: lambda seed: _settings.build(1, seed=seed),
    2: lambda seed: _settings.build(2, seed=seed),
    3: lambda seed: _settings.build(3, seed=seed),
}


def claim(claim_id: str, settings: Iterable[int]) -> Callable[[Verifier], Verifier]:
    """Register a verifier of ``claim_id`` for the given setting indices."""

    def deco(fn: Verifier) -> Verifier:
        _VERIFIERS.setdefault(claim_id, []).append((tuple(settings), fn))
        return fn

    return deco


def register_setting(index: int, factory: Callable[[int], _settings.Setting]) -> None:
    """Make setting ``index`` (e.g. 4, from rna_train) available to the verifiers."""
    _SETTINGS[index] = factory


#: Settings provided by other packages, imported only when asked for (they need transformers and
#: a trained model, so they stay out of the default check). The module registers the setting and
#: its verifiers on import.
PLUGIN_SETTINGS: dict[int, str] = {4: "rna_train.studies.miniature.theory", 5: "rna_train.studies.textstudy_theory"}
DEFAULT_SETTINGS = (1, 2, 3)


def _load_verifiers() -> None:
    """Import every claim module of this package: each registers its verifiers (``@claim``) on import,
    so adding a claim is one module here, found without a hand-kept list."""
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def available_claims() -> list[str]:
    """Claim ids with at least one registered verifier."""
    _load_verifiers()
    return sorted(_VERIFIERS)


def parse_claims(spec: str | None) -> list[str]:
    """Validate a comma-separated claim list like ``C2,C6`` (None = all)."""
    known = available_claims()
    if not spec:
        return known
    chosen = [c.strip().upper() for c in spec.split(",") if c.strip()]
    bad = [c for c in chosen if c not in known]
    if bad or not chosen:
        raise RNAError(f"unknown claim(s) {bad or spec!r}", where="--claims",
                       fix=f"choose from {','.join(known)} (comma-separated)")
    return chosen


def run_checks(claims: Iterable[str] | None = None, *, settings: Iterable[int] | None = None,
               budget: Budget = Budget(),
               progress: Callable[[str], None] | None = None) -> list[ClaimResult]:
    """Run the registered verifiers for ``claims`` on ``settings``; rows in registry order."""
    _load_verifiers()
    allowed = set(settings) if settings is not None else set(DEFAULT_SETTINGS)
    for index in sorted(allowed - set(_SETTINGS)):
        if index not in PLUGIN_SETTINGS:
            raise RNAError(f"unknown setting {index}", where="--settings",
                           fix=f"choose from {sorted(set(_SETTINGS) | set(PLUGIN_SETTINGS))}")
        try:
            importlib.import_module(PLUGIN_SETTINGS[index])
        except ImportError as exc:
            raise RNAError(f"setting {index} is unavailable ({exc})", where="--settings",
                           fix="install rna with its trainer (pip install -e .) or drop this setting") from None
    wanted = list(claims) if claims is not None else sorted(_VERIFIERS)
    cache: dict[int, _settings.Setting] = {}
    rows: list[ClaimResult] = []
    for cid in wanted:
        for setting_ids, fn in _VERIFIERS.get(cid, []):
            for s in setting_ids:
                if s not in allowed or s not in _SETTINGS:
                    continue
                if s not in cache:
                    cache[s] = _SETTINGS[s](budget.seed)
                if progress:
                    progress(f"{cid} on setting {s} ({cache[s].name})")
                start = time.perf_counter()
                out = fn(cache[s], budget)
                elapsed = (time.perf_counter() - start) / max(len(out), 1)
                for r in out:
                    r.setting_name = cache[s].name
                    r.seconds = elapsed
                rows.extend(out)
    return rows
