"""Random Noise Augmentation (RNA) in the retain step, in the reference code's form or on inputs.

``mode: target`` reproduces the reference code: Gaussian noise is added to the output of decoder
layer ``k`` of the *frozen / reference* model during its retain forward, so the updated model is
fitted to a noisy target (for RM methods with ``k = l`` this is ``h_frozen(x_R) + delta``).
``mode: input`` adds the noise to the *updated* model's own retain forward after layer ``k`` and
takes the loss downstream against the clean target (training on perturbed latents, theory.md C3).
Forget losses never see noise. With ``mode: off`` (the default) or a schedule that is always zero,
:meth:`RNA.perturb` returns a no-op context: no hook is registered and nothing extra runs.

Noise comes from :meth:`rna_theory.noise.NoiseSchedule.sample` (the object the theory evaluates).
A training batch carries its samples' corpus indices (``rows``): each sample's noise is drawn from
its own generator seeded by ``(seed, step, sample)`` at its real tokens only, so runs are
reproducible, a resumed run draws exactly the noise of the uninterrupted one, and an N-process or
gradient-accumulated run draws the same noise per sample as one process (with absolute nu; a
``relative_to: rms`` scale is the RMS of each micro-batch). Without ``rows`` one generator seeded by
``(seed, step, process)`` draws for the whole tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from contextlib import AbstractContextManager

import torch
from torch import nn

from rna_theory.noise import NoiseSchedule
from rna_train.models import edit_layer_output

log = logging.getLogger(__name__)

MODES = ("off", "target", "input")


def step_seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    """A 63-bit seed for one (run seed, step, process) triple: stateless, so resumable."""
    return (seed * 1_000_003 + step * 8191 + rank * 131 + salt * 17) % (2**63)


@dataclasses.dataclass(frozen=True)
class RNA:
    """Resolved RNA settings: where noise goes, how large, and the seed it is drawn from."""

    mode: str = "off"
    layer: int = 0
    schedule: NoiseSchedule | None = None
    seed: int = 0
    rank: int = 0

    @property
    def active(self) -> bool:
        """True when some step can receive noise."""
        return self.mode != "off" and self.schedule is not None and self.schedule.enabled

    def generator(self, step: int, device: torch.device | str) -> torch.Generator:
        """The noise generator for ``step`` on ``device``."""
        gen = torch.Generator(device=device)
        gen.manual_seed(step_seed(self.seed, step, self.rank, salt=1))
        return gen

    def nu(self, step: int) -> float:
        """The schedule's nu at ``step`` (0 when inactive), for logging."""
        return self.schedule.nu_at(step) if self.active and self.schedule is not None else 0.0

    def perturb(self, role: str, model: nn.Module, mask: torch.Tensor, step: int,
                generator: torch.Generator | None, rows: torch.Tensor | None = None) -> AbstractContextManager[None]:
        """Context adding noise to ``model``'s layer output if ``role`` is the configured mode.

        ``role`` is ``target`` for the frozen / reference model's retain forward and ``input`` for
        the updated model's. Noise is zero at padding positions.
        """
        if not self.active or role != self.mode:
            return contextlib.nullcontext()
        return edit_layer_output(model, self.layer,
                                 lambda hidden: self.add_noise(hidden, mask, step, generator, rows))

    def row_generators(self, step: int, rows: torch.Tensor, device: torch.device | str) -> list[torch.Generator]:
        """One generator per sample, seeded by ``(seed, step, sample index)``: independent of the process."""
        out = []
        for row in rows.tolist():
            gen = torch.Generator(device=device)
            gen.manual_seed(step_seed(self.seed, step, int(row), salt=3))
            out.append(gen)
        return out

    def add_noise(self, hidden: torch.Tensor, mask: torch.Tensor, step: int,
                  generator: torch.Generator | None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden`` plus step ``step``'s noise, zero at padding (what :meth:`perturb` adds at the layer).

        With ``rows`` (the samples' corpus indices) each sample's noise comes from its own generator.
        """
        schedule = self.schedule
        assert schedule is not None and self.active, "add_noise needs an active RNA schedule"
        m = mask.to(hidden.dtype).unsqueeze(-1)
        source = self.row_generators(step, rows, hidden.device) if rows is not None else generator
        return hidden + schedule.sample(hidden, step, mask=mask, generator=source) * m
