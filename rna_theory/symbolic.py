"""Sympy derivations behind the closed forms of C2 and C3, evaluated (not only printed) by tests.

Expectations over Gaussian noise are taken by expanding the polynomial in the noise symbols and
replacing each monomial by its Gaussian moment (independent coordinates, E e^k = 0 for odd k and
nu^k (k-1)!! for even k), which is exact for polynomial losses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import sympy as sp

from rna_theory.errors import check_int


def gaussian_expectation(expr: sp.Expr, noise: Sequence[sp.Symbol], std: sp.Expr) -> sp.Expr:
    """E[expr] over independent noise symbols ~ N(0, std^2), for expr polynomial in the noise."""
    poly = sp.Poly(sp.expand(expr), *noise)
    total = sp.Integer(0)
    for powers, coeff in poly.terms():
        moment = sp.Integer(1)
        for k in powers:
            moment *= 0 if k % 2 else std**k * sp.factorial2(k - 1)
        total += coeff * moment
    return sp.simplify(total)


@dataclasses.dataclass
class LinearHeadDerivation:
    """C2 exact quadratic case: E (y - w.(z+eps))^2 - (y - w.z)^2 = eta^2 ||w||^2."""

    increase: sp.Expr
    closed_form: sp.Expr
    w: tuple[sp.Symbol, ...]
    z: tuple[sp.Symbol, ...]
    y: sp.Symbol
    eta: sp.Symbol

    @property
    def proved(self) -> bool:
        """True when sympy reduces increase - closed_form to exactly zero."""
        return sp.simplify(self.increase - self.closed_form) == 0

    def evaluate(self, w: np.ndarray, z: np.ndarray, y: float, eta: float) -> float:
        """The derived expression at numeric values."""
        subs = {**dict(zip(self.w, w)), **dict(zip(self.z, z)), self.y: y, self.eta: eta}
        return float(self.increase.subs(subs))


def derive_linear_head_increase(dim: int) -> LinearHeadDerivation:
    """Derive C2's exact expected loss increase for squared loss of a linear head in d dimensions."""
    dim = check_int(dim, "dim", minimum=1)
    w = sp.symbols(f"w0:{dim}", real=True)
    z = sp.symbols(f"z0:{dim}", real=True)
    e = sp.symbols(f"e0:{dim}", real=True)
    y = sp.Symbol("y", real=True)
    eta = sp.Symbol("eta", positive=True)
    clean = (y - sum(wi * zi for wi, zi in zip(w, z))) ** 2
    noisy = (y - sum(wi * (zi + ei) for wi, zi, ei in zip(w, z, e))) ** 2
    increase = gaussian_expectation(noisy, e, eta) - clean
    return LinearHeadDerivation(sp.simplify(increase), eta**2 * sum(wi**2 for wi in w), w, z, y, eta)


@dataclasses.dataclass
class RidgeDerivation:
    """C3: the minimiser of expected noisy least squares equals ridge with lambda = n nu^2."""

    noisy_minimiser: sp.Matrix
    ridge_minimiser: sp.Matrix
    lam: sp.Expr
    z: sp.Matrix
    y: sp.Matrix
    nu: sp.Symbol
    _fn: Callable[..., np.ndarray] | None = None

    @property
    def proved(self) -> bool:
        """True when sympy reduces the difference of the two minimisers to the zero vector."""
        return all(sp.simplify(d) == 0 for d in self.noisy_minimiser - self.ridge_minimiser)

    def evaluate(self, z: np.ndarray, y: np.ndarray, nu: float) -> np.ndarray:
        """The derived noisy-training minimiser at numeric data."""
        if self._fn is None:
            self._fn = sp.lambdify([*self.z, *self.y, self.nu], self.noisy_minimiser, "numpy")
        return np.asarray(self._fn(*np.ravel(z), *np.ravel(y), nu), dtype=np.float64).ravel()


def derive_ridge_equivalence(n: int, dim: int) -> RidgeDerivation:
    """Derive argmin_w E (1/n) sum_i (y_i - w.(z_i + delta_i))^2 and compare with ridge (n x d symbols)."""
    n = check_int(n, "n", minimum=1)
    dim = check_int(dim, "dim", minimum=1)
    z = sp.Matrix(n, dim, lambda i, j: sp.Symbol(f"z{i}_{j}", real=True))
    y = sp.Matrix(n, 1, lambda i, _: sp.Symbol(f"y{i}", real=True))
    w = sp.Matrix(dim, 1, lambda j, _: sp.Symbol(f"w{j}", real=True))
    delta = sp.Matrix(n, dim, lambda i, j: sp.Symbol(f"d{i}_{j}", real=True))
    nu = sp.Symbol("nu", positive=True)
    residual = y - (z + delta) * w
    objective = sum(r**2 for r in residual) / n
    expected = gaussian_expectation(objective, list(delta), nu)
    grad = [sp.diff(expected, wj) for wj in w]
    sol = sp.solve(grad, list(w), dict=True)[0]
    noisy = sp.Matrix([sp.simplify(sol[wj]) for wj in w])
    lam = n * nu**2
    ridge = (z.T * z + lam * sp.eye(dim)).LUsolve(z.T * y)
    return RidgeDerivation(noisy, sp.simplify(ridge), lam, z, y, nu)
