"""Executable theory of Random Noise Augmentation (RNA) for robust LLM unlearning.

Pure numerics (numpy, scipy, sympy, torch) in float64: the noise model shared with the trainer,
estimators for Assumption 1, closed-form and second-order predictions, certified-robustness bounds,
gradient identities of the reference code's RNA variants, a noise-scale tuner and a registry of
numerical checks for the claims C1-C8 of the project's theory (docs/theory.md).
"""

from rna_theory.errors import RNAError
from rna_theory.noise import NoiseSchedule

__all__ = ["NoiseSchedule", "RNAError"]
__version__ = "0.1.0"
