"""C1 estimators recover known truths and reject bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rna_theory import RNAError
from rna_theory.estimators import assumption1, effective_rank, gaussianity, participation_ratio
from rna_theory.stats import FALSE_FAILURE

EXAMPLES = 25


@given(st.integers(20, 300), st.integers(1, 48), st.floats(0.01, 5.0), st.integers(0, 10_000))
def test_eta_interval_contains_truth(n, d, eta, seed):
    rng = np.random.default_rng(seed)
    clean = rng.standard_normal((n, d)) * 3
    shift = rng.standard_normal(d)
    pert = clean + shift + eta * rng.standard_normal((n, d))
    est = assumption1(clean, pert, ci_alpha=FALSE_FAILURE / EXAMPLES)
    assert est.eta_ci[0] <= eta <= est.eta_ci[1]
    assert est.mean == pytest.approx(shift, abs=10 * eta / np.sqrt(n) + 1e-12)
    assert est.dim == d and est.n == n


def test_spectrum_and_effective_rank():
    assert effective_rank(np.ones(10)) == pytest.approx(10)
    assert participation_ratio(np.ones(10)) == pytest.approx(10)
    assert effective_rank(np.array([1.0, 0, 0])) == pytest.approx(1)
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((4000, 8))
    pert = clean + rng.standard_normal((4000, 8)) * np.array([3, 1, 1, 1, 1, 1, 1, 1.0])
    est = assumption1(clean, pert)
    assert est.spectrum[0] == pytest.approx(9, rel=0.1)
    assert est.anisotropy > 3
    assert est.effective_rank < 8


def test_gaussianity_power_and_level():
    rng = np.random.default_rng(1)
    gauss = gaussianity(rng.standard_normal((2000, 16)), alpha=FALSE_FAILURE)
    assert not gauss.rejected
    heavy = gaussianity(rng.laplace(size=(2000, 16)), alpha=0.01)
    assert heavy.rejected and heavy.excess_kurtosis_mean > 0.2  # projections of Laplace coordinates


@pytest.mark.parametrize("clean, pert, match", [
    (np.zeros((0, 3)), np.zeros((0, 3)), "at least 1 row"),
    (np.zeros((4, 3)), np.zeros((5, 3)), "paired rows"),
    (np.zeros((4, 3)), np.zeros((4, 2)), "paired rows"),
    (np.zeros(4), np.zeros(4), "2 dimension"),
    (np.full((4, 3), np.nan), np.zeros((4, 3)), "non-finite"),
    ([["a"]], [["b"]], "numeric"),
])
def test_bad_latents(clean, pert, match):
    with pytest.raises(RNAError, match=match):
        assumption1(clean, pert)


def test_to_dict_is_json_safe():
    import json

    rng = np.random.default_rng(2)
    c = rng.standard_normal((50, 4))
    d = assumption1(c, c + 0.1 * rng.standard_normal((50, 4))).to_dict()
    json.dumps(d)
    assert set(d) >= {"eta", "eta_ci", "spectrum", "effective_rank", "gaussianity", "mean_norm"}


def test_robust_scale_and_outlier_share():
    rng = np.random.default_rng(4)
    clean = rng.standard_normal((3000, 200))
    gauss = assumption1(clean, clean + 0.5 * rng.standard_normal((3000, 200)))
    assert gauss.robust_eta == pytest.approx(0.5, rel=0.05)
    assert gauss.top1pct_variance_share == pytest.approx(0.01, rel=0.2)
    spikes = 0.5 * rng.standard_normal((3000, 200))
    spikes[:, :2] *= 40  # two massive coordinates, as in LLM activations
    heavy = assumption1(clean, clean + spikes)
    assert heavy.top1pct_variance_share > 0.9 and heavy.robust_eta < 0.3 * heavy.eta
    assert heavy.robust_eta == pytest.approx(0.5, rel=0.05)  # the bulk's scale, not the spikes'
