"""Seeded generators for the theory's settings 1-3 (theory.md): small, exact, float64.

Each :class:`Setting` exposes retain latents z with labels y, a head mapping latents to outputs,
a per-row loss, and a way to produce paired clean / perturbed latents for a forget-token. In
settings 1 and 2 the perturbation is Gaussian by construction (Assumption 1 holds, so the bounds
are tested under their hypotheses); in setting 3 a fixed trigger vector is added to the *input*
and propagated through the MLP's first layer, so Assumption 1 is measured, not imposed.
Setting 4 (a tiny causal transformer) is built by ``rna_train`` and plugs into the same registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch.nn import functional as F

from rna_theory.errors import RNAError, check_finite, check_int

DTYPE = torch.float64


@dataclasses.dataclass
class Setting:
    """One theory setting: latents, labels, head and loss."""

    index: int
    name: str
    dim: int
    z: torch.Tensor
    y: torch.Tensor
    head: Callable[[torch.Tensor], torch.Tensor]
    task: str
    perturb: Callable[[int, float, int], tuple[torch.Tensor, torch.Tensor]]
    weights: torch.Tensor | None = None
    head_module: torch.nn.Module | None = None
    encoder: torch.nn.Module | None = None
    inputs: torch.Tensor | None = None

    def loss(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row loss of the head at latents ``z`` (labels default to the setting's own)."""
        y = self.y[: z.shape[0]] if y is None else y
        out = self.head(z)
        if self.task == "regression":
            return (out - y) ** 2
        return F.cross_entropy(out, y, reduction="none")

    def loss_fn(self, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Per-row loss against the labels of the first ``rows`` examples, tiled for batched calls."""
        y = self.y[:rows]

        def fn(z: torch.Tensor) -> torch.Tensor:
            reps = z.shape[0] // rows
            return self.loss(z, y.repeat(reps))

        return fn

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the head (classification settings)."""
        if self.task != "classification":
            raise RNAError(f"setting {self.index} is a regression", where="setting",
                           fix="use a classification setting (2 or 3)")
        return torch.softmax(self.head(z), dim=-1)


def _fit(params: list[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int) -> None:
    opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    opt.step(closure)


def linear_regression(dim: int = 16, n: int = 256, *, seed: int = 0, noise: float = 0.1) -> Setting:
    """Setting 1: least-squares linear head on Gaussian latents; perturbation eps ~ N(0, eta^2 I)."""
    dim = check_int(dim, "dim", minimum=1)
    n = check_int(n, "n", minimum=2)
    noise = check_finite(noise, "noise", minimum=0.0)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=gen, dtype=DTYPE)
    w_true = torch.randn(dim, generator=gen, dtype=DTYPE) / dim**0.5
    y = z @ w_true + noise * torch.randn(n, generator=gen, dtype=DTYPE)
    w = torch.linalg.lstsq(z, y.unsqueeze(1)).solution.squeeze(1)
    return Setting(1, "linear-regression", dim, z, y, lambda v: v @ w, "regression",
                   _gaussian_perturb(z), weights=w)


def softmax_linear(dim: int = 16, n_classes: int = 4, n: int = 512, *, seed: int = 0,
                   separation: float = 1.5, l2: float = 1e-2) -> Setting:
    """Setting 2: multinomial logistic head (convex in z) on a Gaussian class mixture."""
    dim = check_int(dim, "dim", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    means = separation * torch.randn(n_classes, dim, generator=gen, dtype=DTYPE) / dim**0.25
    y = torch.randint(0, n_classes, (n,), generator=gen)
    z = means[y] + torch.randn(n, dim, generator=gen, dtype=DTYPE)
    weight = torch.zeros(n_classes, dim, dtype=DTYPE, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=DTYPE, requires_grad=True)
    _fit([weight, bias], lambda: F.cross_entropy(z @ weight.T + bias, y) + l2 * weight.pow(2).sum(), 30)
    module = torch.nn.Linear(dim, n_classes).to(DTYPE)
    with torch.no_grad():
        module.weight.copy_(weight)
        module.bias.copy_(bias)
    module.requires_grad_(False)
    return Setting(2, "softmax-linear", dim, z, y, module, "classification", _gaussian_perturb(z),
                   weights=module.weight, head_module=module)


def mlp(dim: int = 32, n_classes: int = 4, n: int = 1024, *, input_dim: int = 16, seed: int = 0,
        trigger_scale: float = 1.0, steps: int = 150) -> Setting:
    """Setting 3: MLP classifier x -> z = tanh(W1 x + b1) -> tanh(W2 z + b2) -> logits.

    The latent is the first hidden layer. A forget-token is a fixed input vector t added to x;
    its latent effect z(x + t) - z(x) is deterministic and context dependent, so Assumption 1
    is an approximation whose quality C1 measures.
    """
    dim = check_int(dim, "dim", minimum=1)
    gen = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(n_classes, input_dim, generator=gen, dtype=DTYPE) / input_dim**0.25
    y = torch.randint(0, n_classes, (n,), generator=gen)
    x = means[y] + torch.randn(n, input_dim, generator=gen, dtype=DTYPE)
    net = torch.nn.Sequential(torch.nn.Linear(input_dim, dim), torch.nn.Tanh(), torch.nn.Linear(dim, dim),
                              torch.nn.Tanh(), torch.nn.Linear(dim, n_classes)).to(DTYPE)
    torch.manual_seed(seed)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=1.0 / max(p.shape[-1], 1) ** 0.5, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.requires_grad_(False)
    encoder, head_net = net[:2], net[2:]
    z = encoder(x)
    trigger = trigger_scale * torch.randn(input_dim, generator=gen, dtype=DTYPE)

    def perturb(rows: int, scale: float, pseed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(pseed)
        idx = torch.randperm(n, generator=g)[:rows]
        return encoder(x[idx]), encoder(x[idx] + scale * trigger)

    return Setting(3, "mlp", dim, z, y, head_net, "classification", perturb, head_module=head_net,
                   encoder=encoder, inputs=x)


def _gaussian_perturb(z: torch.Tensor) -> Callable[[int, float, int], tuple[torch.Tensor, torch.Tensor]]:
    def perturb(rows: int, eta: float, pseed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(pseed)
        idx = torch.randint(0, z.shape[0], (rows,), generator=g)
        clean = z[idx]
        return clean, clean + eta * torch.randn(clean.shape, generator=g, dtype=DTYPE)

    return perturb


def build(index: int, *, seed: int = 0) -> Setting:
    """Setting ``index`` (1-3) with default sizes."""
    builders = {1: linear_regression, 2: softmax_linear, 3: mlp}
    if index not in builders:
        raise RNAError(f"unknown setting {index}", where="setting",
                       fix="settings 1-3 live in rna_theory; setting 4 comes from rna_train")
    return builders[index](seed=seed)


SETTINGS: dict[int, str] = {1: "linear-regression", 2: "softmax-linear", 3: "mlp"}
