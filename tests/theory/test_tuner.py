"""C7 tuner: closed forms, monotonicity, files, plots and errors."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rna_theory import NoiseSchedule, RNAError
from rna_theory.bounds import anisotropic_certified_probability
from rna_theory.tuner import closed_form_nu, load_latents, plot, schedule_robustness, tune, tune_from_file

targets = st.floats(0.05, 0.995)


@given(st.floats(0.01, 3.0), st.integers(1, 512), st.floats(0.05, 4.0), targets,
       st.sampled_from(["certified", "first-order"]))
def test_reproduces_closed_form(eta, dim, margin, target, criterion):
    got = tune(margins=[margin], eta=eta, dim=dim, target=target, criterion=criterion).recommended_nu
    want = closed_form_nu(eta, dim, margin, target, criterion)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-9 * eta)


@given(st.lists(st.floats(0.05, 3.0), min_size=1, max_size=30), st.floats(0.05, 1.0), st.integers(1, 256),
       targets, targets)
def test_monotone_in_target(margins, eta, dim, t1, t2):
    lo, hi = sorted((t1, t2))
    a = tune(margins=margins, eta=eta, dim=dim, target=lo).recommended_nu
    b = tune(margins=margins, eta=eta, dim=dim, target=hi).recommended_nu
    assert b >= a


@given(st.lists(st.floats(0.05, 3.0), min_size=1, max_size=20), st.floats(0.05, 1.0), st.integers(1, 64), targets)
def test_recommendation_is_the_smallest_meeting_the_target(margins, eta, dim, target):
    res = tune(margins=margins, eta=eta, dim=dim, target=target)
    nu = res.recommended_nu
    at = tune(margins=margins, eta=eta, dim=dim, nus=[nu, nu * 0.999]).rows
    assert at[1].certified >= target  # rows are sorted: [0.999 nu, nu]
    assert at[0].certified < target + 1e-9


def test_unreachable_target_is_explained():
    res = tune(margins=[1.0, -0.2], eta=0.1, dim=4, target=0.9)
    assert res.recommended_nu is None and "saturates" in res.note
    assert "no nu reaches" in res.table()


def test_relative_candidates_and_cost():
    res = tune(margins=[1.0], eta=0.1, dim=8, nus=[0.1, 0.2], relative=True, rms=2.0, trace_hessian=4.0)
    assert [r.nu for r in res.rows] == [0.2, 0.4]
    assert [r.nu_relative for r in res.rows] == [0.1, 0.2]
    assert res.rows[1].retain_cost == pytest.approx(0.5 * 0.16 * 4.0)
    with pytest.raises(RNAError, match="RMS"):
        tune(margins=[1.0], eta=0.1, dim=8, nus=[0.1], relative=True)


def test_file_roundtrip_and_anisotropic(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((200, 6))
    pert = clean + 0.2 * rng.standard_normal((200, 6))
    path = tmp_path / "latents.npz"
    np.savez(path, clean=clean, perturbed=pert, margins=np.full(10, 1.5), rms=np.array(1.3),
             meta=np.array(json.dumps({"layer": 3})))
    data = load_latents(path)
    assert data["meta"] == {"layer": 3} and data["rms"] == pytest.approx(1.3)
    iso = tune_from_file(path, target=0.9)
    aniso = tune_from_file(path, target=0.9, anisotropic=True)
    assert iso.recommended_nu == pytest.approx(aniso.recommended_nu, rel=0.25)
    exact = anisotropic_certified_probability(aniso.recommended_nu * 1.5, pert.mean(0) - clean.mean(0),
                                              np.cov(pert - clean, rowvar=False))
    assert exact >= 0.9 - 0.01  # the sampled prediction agrees with the exact generalised chi-square
    assert iso.recommended_nu_relative == pytest.approx(iso.recommended_nu / 1.3)
    out = plot(iso, tmp_path / "plot.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    json.dumps(iso.to_dict())


@pytest.mark.parametrize("kwargs, match", [
    ({"margins": [1.0], "eta": -0.1, "dim": 3}, "eta"),
    ({"margins": [1.0], "eta": float("nan"), "dim": 3}, "eta"),
    ({"margins": [1.0], "eta": 0.1, "dim": 0}, "dim"),
    ({"margins": [], "eta": 0.1, "dim": 3}, "margins"),
    ({"margins": [1.0], "eta": 0.1, "dim": 3, "target": 1.0}, "target"),
    ({"margins": [1.0], "eta": 0.1, "dim": 3, "nus": [-0.1]}, "nus"),
    ({"margins": [1.0], "eta": 0.1, "dim": 3, "criterion": "typical"}, "criterion"),
    ({"margins": [1.0]}, "perturbation scale"),
    ({"margins": [1.0], "latents": (np.zeros((3, 2)), np.zeros((4, 2)))}, "paired"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(RNAError, match=match):
        tune(**kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(RNAError, match="not found"):
        load_latents(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(RNAError, match="npz"):
        load_latents(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", clean=np.zeros((3, 2)))
    with pytest.raises(RNAError, match="perturbed"):
        load_latents(tmp_path / "partial.npz")
    np.savez(tmp_path / "nomargins.npz", clean=np.zeros((3, 2)), perturbed=np.ones((3, 2)))
    with pytest.raises(RNAError, match="margins"):
        tune_from_file(tmp_path / "nomargins.npz")


def test_schedule_robustness_uses_the_trainer_schedule():
    sched = NoiseSchedule(0.5, kind="linear", nu_end=0.1)
    out = schedule_robustness(sched, 100, margins=[1.0, 2.0], eta=0.1, dim=4)
    assert out["nu"][0] == pytest.approx(0.5) and out["final_nu"] == pytest.approx(0.1)
    assert out["robustness"][0] >= out["robustness"][-1]


@pytest.mark.parametrize("criterion", ["certified", "first-order"])
def test_nonpositive_margins_count_as_failures_under_both_criteria(criterion):
    """60 certifiable and 4 uncertifiable queries: the ceiling is 60/64 = 0.9375 for either criterion."""
    margins = np.r_[np.full(60, 1.0), np.full(4, -0.5)]
    res = tune(margins=margins, eta=0.2, dim=576, target=0.95, criterion=criterion)
    assert res.recommended_nu is None and "0.938" in res.note
    assert max(max(r.certified, r.first_order) for r in res.rows) <= 60 / 64 + 1e-12
    res = tune(margins=np.array([-0.5, -1.0]), eta=0.2, dim=8, target=0.4, criterion=criterion)
    assert res.recommended_nu is None and "without noise" not in res.note
    reachable = tune(margins=margins, eta=0.2, dim=576, target=0.9, criterion=criterion)
    assert reachable.recommended_nu is not None


def test_tiny_margins_and_absent_perturbations_get_consistent_answers():
    tiny = tune(margins=np.array([1e-9]), eta=0.1, dim=16, target=0.9)
    assert tiny.recommended_nu == pytest.approx(closed_form_nu(0.1, 16, 1e-9, 0.9, "certified"), rel=1e-6)
    absent = tune(margins=np.array([1.0, 2.0]), eta=0.0, dim=16, target=0.9, nus=[0.0, 0.1])
    assert absent.recommended_nu == 0.0 and all(r.meets_target for r in absent.rows)


def test_a_significant_mean_shift_is_not_ignored(tmp_path):
    """||mu|| = 1.1 eta sqrt(d): the isotropic model is far off, so the tuner uses N(mu, Sigma) and its
    recommendation meets the target under the true distribution of ||eps||."""
    rng = np.random.default_rng(0)
    n, d, eta = 4000, 64, 0.05
    mu = np.zeros(d)
    mu[0] = 1.1 * eta * np.sqrt(d)
    clean = rng.standard_normal((n, d))
    perturbed = clean + mu + eta * rng.standard_normal((n, d))
    margins = np.full(200, 1.0)
    res = tune(margins=margins, latents=(clean, perturbed), target=0.9)
    assert res.anisotropic and "mean shift" in res.note
    norms = np.linalg.norm(mu + eta * rng.standard_normal((200_000, d)), axis=1)
    true_probability = np.mean(norms < res.recommended_nu * 1.0)
    assert true_probability >= 0.9 - 0.01
    pure = tune(margins=margins, latents=(clean, clean + mu), target=0.9)  # eta = 0 up to rounding
    assert pure.anisotropic and pure.recommended_nu == pytest.approx(np.linalg.norm(mu), rel=1e-3)


def test_non_scalar_rms_in_a_latents_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, clean=np.zeros((4, 3)), perturbed=np.ones((4, 3)), margins=np.ones(4), rms=np.ones(3))
    with pytest.raises(RNAError, match="'rms' must be one number"):
        tune_from_file(path)
