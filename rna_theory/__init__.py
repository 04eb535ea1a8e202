"""Executable theory of Random Noise Augmentation (RNA) for robust LLM unlearning.

Pure numerics (numpy, scipy, sympy, torch) in float64: the noise model shared with the trainer,
estimators for Assumption 1, closed-form and second-order predictions, certified-robustness bounds,
gradient identities of the reference code's RNA variants, a noise-scale tuner and a registry of
numerical checks for the claims C1-C8 of the project's theory (docs/theory.md).
"""

from typing import Any

from rna_theory.errors import RNAError

__all__ = ["NoiseSchedule", "RNAError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``NoiseSchedule`` is imported on first use: it needs torch, which ``rna --help`` should not load."""
    if name == "NoiseSchedule":
        from rna_theory.noise import NoiseSchedule

        return NoiseSchedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
