"""The RNA noise model shared by the theory module and the trainer.

``nu`` is a *standard deviation* (variance ``nu**2``), as in the reference code, which multiplies a
standard normal by ``nu``. A schedule maps the training step to ``nu``; with ``relative_to="rms"``
``nu`` is a fraction of the activation RMS at the layer where noise is injected, so one value
transfers across layers and models whose activation scales differ by orders of magnitude.
The trainer calls :meth:`NoiseSchedule.sample` unchanged; the tuner evaluates :meth:`nu_at`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rna_theory.errors import RNAError, check_finite, check_int

KINDS = ("constant", "linear", "cosine", "step")
RELATIVE = ("absolute", "rms", "robust")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """Gaussian noise scale over training steps.

    Attributes:
        nu: noise standard deviation at step 0 (absolute, or a fraction of the activation RMS).
        kind: ``constant`` | ``linear`` (nu -> nu_end) | ``cosine`` (nu -> nu_end, half cosine) |
            ``step`` (multiply by ``gamma`` at each milestone).
        nu_end: final value for ``linear`` and ``cosine``.
        total_steps: schedule length for ``linear`` and ``cosine``; later steps keep ``nu_end``.
        milestones: steps at which ``step`` schedules multiply by ``gamma``.
        gamma: factor applied at each milestone.
        relative_to: ``absolute``, ``rms`` (nu times the RMS of the clean activation over the
            valid, non-padding positions of the batch; detached, so it is a scale, not a path
            for gradients) or ``robust`` (nu times :func:`activation_robust_scale`: the median
            absolute deviation of the same values times 1.4826, the standard deviation of a Gaussian
            with the same bulk; a few massive-activation coordinates, as in Gemma, inflate the RMS
            by orders of magnitude but barely move it).
    """

    nu: float
    kind: str = "constant"
    nu_end: float | None = None
    total_steps: int | None = None
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    relative_to: str = "absolute"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nu", check_finite(self.nu, "nu", minimum=0.0,
                                                    fix="nu is a standard deviation: pass nu >= 0"))
        if self.kind not in KINDS:
            raise RNAError(f"unknown schedule kind {self.kind!r}", where="noise.kind",
                           fix=f"use one of {', '.join(KINDS)}")
        if self.relative_to not in RELATIVE:
            raise RNAError(f"unknown value {self.relative_to!r}", where="noise.relative_to",
                           fix=f"use one of {', '.join(RELATIVE)}")
        if self.kind in ("linear", "cosine"):
            if self.nu_end is None:
                raise RNAError(f"a {self.kind} schedule needs nu_end", where="noise.nu_end",
                               fix="set nu_end (e.g. 0 to anneal the noise away)")
            object.__setattr__(self, "nu_end", check_finite(self.nu_end, "noise.nu_end", minimum=0.0))
        if self.total_steps is not None:
            object.__setattr__(self, "total_steps", check_int(self.total_steps, "noise.total_steps",
                                                              minimum=1))
        ms = tuple(check_int(m, "noise.milestones", minimum=0) for m in self.milestones)
        if list(ms) != sorted(ms):
            raise RNAError(f"milestones must be increasing, got {list(ms)}", where="noise.milestones",
                           fix="sort the milestones")
        object.__setattr__(self, "milestones", ms)
        object.__setattr__(self, "gamma", check_finite(self.gamma, "noise.gamma", minimum=0.0))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | float) -> NoiseSchedule:
        """Build from a config mapping (or a bare number meaning a constant schedule)."""
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return cls(nu=float(data))
        if not isinstance(data, Mapping):
            raise RNAError(f"expected a mapping or a number, got {type(data).__name__}",
                           where="noise", fix="write noise as {nu: 0.03, kind: constant} or a number")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RNAError(f"unknown key(s) {unknown}", where="noise", fix=f"valid keys: {sorted(names)}")
        if "nu" not in data:
            raise RNAError("missing key 'nu'", where="noise", fix="set nu (a standard deviation)")
        kwargs = dict(data)
        if "milestones" in kwargs:
            ms = kwargs["milestones"]
            if not isinstance(ms, Sequence) or isinstance(ms, str):
                raise RNAError(f"must be a list of steps, got {ms!r}", where="noise.milestones",
                               fix="write milestones: [100, 200]")
            kwargs["milestones"] = tuple(ms)
        return cls(**kwargs)

    def with_total_steps(self, total_steps: int) -> NoiseSchedule:
        """Return a copy whose schedule spans ``total_steps`` unless it already has a length."""
        if self.total_steps is not None:
            return self
        return dataclasses.replace(self, total_steps=total_steps)

    @property
    def enabled(self) -> bool:
        """False when the schedule can never produce noise, so callers can skip it at zero cost."""
        if self.kind in ("linear", "cosine"):
            return self.nu > 0 or (self.nu_end or 0.0) > 0
        return self.nu > 0

    def nu_at(self, step: int) -> float:
        """The schedule's ``nu`` (absolute or relative, per ``relative_to``) at ``step``."""
        step = check_int(step, "step", minimum=0)
        if self.kind == "constant":
            return self.nu
        if self.kind == "step":
            passed = sum(1 for m in self.milestones if step >= m)
            return self.nu * self.gamma**passed
        if self.total_steps is None:
            raise RNAError(f"a {self.kind} schedule needs total_steps", where="noise.total_steps",
                           fix="set total_steps or let the trainer fill it from the run length")
        frac = min(step / self.total_steps, 1.0)
        end = float(self.nu_end)  # validated in __post_init__
        if self.kind == "linear":
            return self.nu + (end - self.nu) * frac
        return end + (self.nu - end) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def std(self, step: int, activations: torch.Tensor | None = None,
            mask: torch.Tensor | None = None) -> torch.Tensor | float:
        """Absolute noise standard deviation at ``step`` for the given clean activations.

        ``mask`` (batch x seq, 1 = real token) restricts the RMS to valid positions.
        """
        nu = self.nu_at(step)
        if self.relative_to == "absolute":
            return nu
        if activations is None:
            raise RNAError("relative noise needs the activations to scale by", where="noise.relative_to",
                           fix="pass activations, or use relative_to: absolute")
        if self.relative_to == "robust":
            return nu * activation_robust_scale(activations, mask)
        return nu * activation_rms(activations, mask)

    def sample(self, activations: torch.Tensor, step: int, *, mask: torch.Tensor | None = None,
               generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Fresh i.i.d. Gaussian noise shaped like ``activations`` for training step ``step``.

        ``generator`` may be one generator per row of ``activations`` (batch x seq x hidden): each
        row's noise is then drawn at its valid positions (``mask``) only, from its own generator, so
        it does not depend on which other rows share the batch or how far they are padded (the
        trainer seeds them by the sample's index: the same noise for any process count).
        """
        std = self.std(step, activations, mask)
        if generator is None or isinstance(generator, torch.Generator):
            noise = torch.randn(activations.shape, generator=generator, device=activations.device,
                                dtype=activations.dtype)
            return noise * std
        if activations.dim() != 3 or len(generator) != activations.shape[0]:
            raise RNAError(f"{len(generator)} row generators for activations of shape {tuple(activations.shape)}",
                           where="noise.sample", fix="pass one generator per row of batch x seq x hidden activations")
        noise = torch.zeros_like(activations)
        width = activations.shape[-1]
        for row, gen in enumerate(generator):
            valid = mask[row].bool() if mask is not None else torch.ones(activations.shape[1], dtype=torch.bool,
                                                                         device=activations.device)
            draw = torch.randn((int(valid.sum()), width), generator=gen, device=activations.device,
                               dtype=activations.dtype)
            noise[row, valid] = draw
        return noise * std


def activation_rms(activations: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Detached root-mean-square of ``activations`` (..., seq, hidden) over valid positions."""
    x = activations.detach().float()
    if mask is None:
        return x.pow(2).mean().sqrt().to(activations.dtype)
    m = mask.to(x.dtype).unsqueeze(-1)
    count = m.sum() * x.shape[-1]
    if count == 0:
        raise RNAError("the mask selects no positions", where="noise.relative_to",
                       fix="check the attention mask of the retain batch")
    return ((x.pow(2) * m).sum() / count).sqrt().to(activations.dtype)


#: MAD to standard deviation for Gaussian data: 1 / Phi^-1(3/4).
MAD_TO_STD = 1.482602218505602


def activation_robust_scale(activations: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Detached robust scale of ``activations`` (..., seq, hidden) over valid positions: 1.4826 x the
    median absolute deviation from the median of all valid values (equal to the standard deviation
    for Gaussian values; unmoved by a few coordinates of huge magnitude)."""
    x = activations.detach().float()
    if mask is not None:
        valid = mask.bool()
        if not valid.any():
            raise RNAError("the mask selects no positions", where="noise.relative_to",
                           fix="check the attention mask of the retain batch")
        x = x[valid]
    values = x.reshape(-1)
    centre = values.median()
    return ((values - centre).abs().median() * MAD_TO_STD).to(activations.dtype)
