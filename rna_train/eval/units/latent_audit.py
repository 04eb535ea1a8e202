"""Report unit ``latent_audit`` (``rna report`` on ``rna audit`` folders): the keyword effect on the
audit probe (forget vs. control), the latent footprint (C1), measured vs. predicted robustness (C6,
C7) as tables and figures, and the latent-difference histograms against the fitted Gaussian."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rna_train.eval.document import Block, legend_outside, png
from rna_train.eval.registry import register_report
from rna_train.eval.report import Run, fmt, rate_cell

#: Most latent-difference histogram panels drawn (runs x keyword lists).
MAX_HIST_PANELS = 8


#: The audit's columns, split in two tables so each fits a screen with a dozen runs: the latent
#: footprint (C1) and robustness, measured vs predicted (C6, C7).
FOOTPRINT_HEADERS = ["run", "keywords", "layer", "alignment", "eta", "robust eta (MAD)", "top-1% coords variance share",
                     "|mean shift|", "effective rank", "d", "Gaussianity"]


ROBUSTNESS_HEADERS = ["run", "keywords", "measured unchanged", "nu", "predicted certified (C6b)",
                      "predicted first-order", "tuner nu (C7)"]


def _audit_tables(runs: Sequence[Run]) -> tuple[Block, Block] | None:
    footprint, robustness = [], []
    for run in runs:
        if not run.audit:
            continue
        alignment = run.audit.get("alignment", "offset")
        for kind, entry in run.audit["keywords"].items():
            est = entry["estimators"].get(alignment, {})
            gauss = est.get("gaussianity") or {}
            pred = (entry.get("predicted") or {}).get("at_nu") or {}
            footprint.append([run.label, kind, str(run.audit["layer"]), alignment, fmt(est.get("eta")),
                              fmt(est.get("robust_eta")), fmt(est.get("top1pct_variance_share")),
                              fmt(est.get("mean_norm")), fmt(est.get("effective_rank")), str(est.get("dim", "n/a")),
                              "rejected" if gauss.get("rejected") else ("not rejected" if gauss else "n/a")])
            robustness.append([run.label, kind, rate_cell(entry["measured"]["unchanged"]), fmt(pred.get("nu")),
                               fmt(pred.get("certified")), fmt(pred.get("first_order")),
                               fmt((entry.get("tuner") or {}).get("recommended_nu"))])
    if not footprint:
        return None
    return (Block("table", headers=FOOTPRINT_HEADERS, rows=footprint),
            Block("table", headers=ROBUSTNESS_HEADERS, rows=robustness))


def _effect_table(runs: Sequence[Run]) -> Block | None:
    """Per run and keyword list: clean vs. perturbed accuracy and the drop (C8 (i): forget vs. control)."""
    rows = []
    for run in runs:
        if not run.audit:
            continue
        for kind, entry in run.audit["keywords"].items():
            m = entry["measured"]
            rows.append([run.label, kind, rate_cell(m["clean_accuracy"]), rate_cell(m["perturbed_accuracy"]),
                         fmt(m["accuracy_drop"]), rate_cell(m["unchanged"])])
    if not rows:
        return None
    return Block("table", headers=["run", "keywords", "clean accuracy", "perturbed accuracy", "accuracy drop",
                                   "unchanged predictions"], rows=rows)


def _histogram_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt
    import seaborn as sns
    from scipy import stats

    panels = []
    for run in runs:
        if not run.audit:
            continue
        alignment = run.audit.get("alignment", "offset")
        for kind, entry in run.audit["keywords"].items():
            path = run.path / entry.get("latents", "")
            if path.is_file():
                panels.append((run.label, kind, path, entry["estimators"].get(alignment, {}).get("eta")))
    if not panels:
        return None
    panels = panels[:MAX_HIST_PANELS]
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, kind, path, eta) in zip(axes.flat, panels, strict=False):
        with np.load(path, allow_pickle=False) as data:
            diffs = data["perturbed"] - data["clean"]
        centred = (diffs - diffs.mean(axis=0)).ravel()
        eta = float(eta) if eta else float(np.sqrt(np.mean(centred**2)))
        width = 5 * eta if eta > 0 else float(np.max(np.abs(centred))) or 1.0
        inside = np.abs(centred) <= width
        # heavy tails (outlier coordinates) would stretch the bins: histogram +-5 eta, count the rest
        sns.histplot(centred[inside], bins=60, binrange=(-width, width), stat="count", ax=ax, color="tab:blue",
                     alpha=0.6, label="measured")
        for patch in ax.patches:
            patch.set_height(patch.get_height() / (centred.size * (2 * width / 60)))
        ax.set_ylabel("density")
        ax.relim()
        ax.autoscale_view()
        if eta > 0:
            grid = np.linspace(-width, width, 200)
            ax.plot(grid, stats.norm.pdf(grid, 0, eta), color="tab:red", lw=1.5,
                    label=f"N(0, eta^2), eta={eta:.3g}")
        ax.set_xlim(-width, width)
        ax.set_title(f"{label}\n{kind} ({100 * (1 - inside.mean()):.2g}% beyond 5 eta)", fontsize=8)
        ax.set_xlabel("centred latent difference")
        legend_outside(ax, 6)
    fig.tight_layout()
    return png(fig)


def _prediction_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt

    curves = [(run, kind, entry) for run in runs if run.audit for kind, entry in run.audit["keywords"].items()
              if (entry.get("predicted") or {}).get("curve")]
    if not curves:
        return None
    points = [(run, kind, entry) for run, kind, entry in curves if entry["predicted"].get("at_nu")]
    ncols = 2 if points else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), squeeze=False)
    ax = axes[0, 0]
    for i, (run, kind, entry) in enumerate(curves):
        color = f"C{i % 10}"
        curve = entry["predicted"]["curve"]
        nus = [c["nu"] for c in curve]
        ax.plot(nus, [c["certified"] for c in curve], color=color, label=f"{run.label} / {kind}: certified")
        ax.plot(nus, [c["first_order"] for c in curve], color=color, ls="--", label="first-order")
        ax.axhline(entry["measured"]["unchanged"]["rate"], color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("RNA noise std nu")
    ax.set_ylabel("P(prediction unchanged)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("predicted (lines) vs measured (dotted)", fontsize=9)
    legend_outside(ax, 6)
    if points:
        ax = axes[0, 1]
        for i, (run, kind, entry) in enumerate(points):
            pred, meas = entry["predicted"]["at_nu"], entry["measured"]["unchanged"]
            err = [[meas["rate"] - meas["ci"][0]], [meas["ci"][1] - meas["rate"]]]
            ax.errorbar(pred["certified"], meas["rate"], yerr=err, fmt="o", color=f"C{i % 10}",
                        label=f"{run.label} / {kind} (certified)")
            ax.errorbar(pred["first_order"], meas["rate"], yerr=err, fmt="s", mfc="none", color=f"C{i % 10}",
                        label="first-order")
        ax.plot([0, 1], [0, 1], color="grey", lw=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("predicted at the run's nu")
        ax.set_ylabel("measured unchanged (95% CI)")
        legend_outside(ax, 6)
    fig.tight_layout()
    return png(fig)


def render(runs: Sequence[Run]) -> list[Block]:
    """The audit sections present in ``runs``."""
    blocks: list[Block] = []
    effect = _effect_table(runs)
    if effect:
        blocks += [Block("h2", "Keyword effect: forget vs. control (latent-audit probe)"),
                   Block("p", "A backdoor shows as a larger drop for forget keywords than for the "
                         "length-matched control words, on the unlearned model but not on the base model."),
                   effect]
    tables = _audit_tables(runs)
    if tables:
        blocks += [Block("h2", "Latent audit (Assumption 1, C1)"),
                   Block("p", "eta: isotropic std of the centred latent differences at the layer; "
                         "Gaussianity: tests on random 1-D projections (rejected = some projection is not "
                         "Gaussian at the tests' level)."), tables[0],
                   Block("h2", "Robustness: measured vs predicted (C6, C7)"), tables[1]]
    fig = _histogram_figure(runs)
    if fig:
        blocks += [Block("h2", "Latent differences vs. the fitted Gaussian"),
                   Block("figure", "Histogram of centred latent-difference coordinates with N(0, eta^2)",
                         png=fig, name="latent_histograms")]
    fig = _prediction_figure(runs)
    if fig:
        blocks += [Block("h2", "Predicted vs. measured robustness (C6, C7)"),
                   Block("p", "Predictions treat the checkpoint's choice probabilities as those of the "
                         "noise-smoothed head; certified = mean chi-square bound F(R^2/eta^2), "
                         "first-order = mean Phi(R/eta), R = nu x probit margin."),
                   Block("figure", "Predicted robustness against nu and measured unchanged fraction",
                         png=fig, name="predicted_vs_measured")]
    return blocks


register_report("latent_audit", render, order=20, directions={"unchanged": "higher"},
                doc="Latent footprint of keyword insertions and predicted vs. measured robustness (rna audit).")
