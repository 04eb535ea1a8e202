"""Markdown + self-contained HTML reports from ``rna eval`` / ``rna audit`` run directories.

A run directory may hold ``eval.json`` + ``predictions.jsonl`` (``rna eval``), ``audit.json`` +
``latents-<kind>.npz`` (``rna audit``) and, when it is a training run, the trainer's
``config.yaml`` (method and RNA noise, used for labels and the nu ablation; also looked up in the
parent folder, for eval/audit folders inside a training run) and ``metrics.jsonl`` (loss curves).
Only eval or audit output is required.

The report is a list of blocks (headings, paragraphs, tables, figures) rendered twice: Markdown
with figures as PNG files beside it, and one HTML file with the figures base64-embedded. Every
string that comes from a run (labels, subjects, questions, keywords, paths) is HTML-escaped in both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError
from rna_train.eval.document import Block, legend_outside, png, write_document
from rna_train.eval.runinfo import read_config, run_label, training_info

log = logging.getLogger(__name__)

#: Most latent-difference histogram panels drawn (runs x keyword lists).
MAX_HIST_PANELS = 8
#: Example perturbed questions shown per run.
EXAMPLES = 3
#: metrics.jsonl keys plotted as losses (the trainer's total, forget and retain terms), besides
#: any key containing "loss".
LOSS_KEYS = ("loss", "forget", "retain")


@dataclasses.dataclass
class Run:
    """Everything the report reads from one run directory."""

    path: Path
    label: str
    info: dict[str, Any]
    eval: dict[str, Any] | None
    audit: dict[str, Any] | None
    records: list[dict[str, Any]]
    metrics: list[dict[str, Any]]

    @property
    def nu(self) -> float | None:
        """RNA noise std as configured (config.yaml, else the audit's --nu), None when unknown."""
        if self.info.get("nu") is not None:
            return float(self.info["nu"])
        for entry in (self.audit or {}).get("keywords", {}).values():
            noise = (entry.get("predicted") or {}).get("noise") or {}
            if noise.get("nu_given") is not None:
                return float(noise["nu_given"])
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RNAError(f"invalid JSON ({exc.msg}, line {exc.lineno})", where=str(path),
                       fix="rerun the command that wrote it") from None
    if not isinstance(data, dict):
        raise RNAError("expected a JSON object", where=str(path), fix="rerun the command that wrote it")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a line that is not JSON", path, lineno)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def load_run(path: str | Path) -> Run:
    """Read one run directory; it must hold eval.json or audit.json."""
    path = Path(path)
    if not path.is_dir():
        raise RNAError("run directory does not exist", where=str(path),
                       fix="pass directories written by `rna eval --out` or `rna audit --out`")
    ev, au = _read_json(path / "eval.json"), _read_json(path / "audit.json")
    if ev is None and au is None:
        raise RNAError("no eval.json or audit.json in the run directory", where=str(path),
                       fix="run `rna eval --out DIR` or `rna audit --out DIR` first")
    # an eval/audit folder inside a training run takes the run's config.yaml and metrics.jsonl
    config = next((c for c in (path / "config.yaml", path.parent / "config.yaml") if c.is_file()), None)
    info = training_info(read_config(config)) if config else training_info({})
    label = (ev or {}).get("label") or run_label(info, path.name)
    metrics = next((m for m in (path / "metrics.jsonl", path.parent / "metrics.jsonl") if m.is_file()), None)
    return Run(path, str(label), info, ev, au, _read_jsonl(path / "predictions.jsonl"),
               _read_jsonl(metrics) if metrics else [])


# ----------------------------------------------------------------------------- numbers and tables

def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return f"{x:.{digits}g}" if (abs(x) < 1e-2 and x != 0) or abs(x) >= 1e4 else f"{x:.{digits}f}"


def _rate(r: dict[str, Any] | None) -> str:
    if not r:
        return "n/a"
    lo, hi = r["ci"]
    return f"{_fmt(r['rate'])} [{_fmt(lo)}, {_fmt(hi)}] (n={r['n']})"


def _accuracy_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Long table: run, condition (clean / perturbed: kind), rate and interval."""
    rows = []
    for run in runs:
        if run.eval:
            res = run.eval["results"][run.eval["primary"]]
            rows.append({"run": run.label, "condition": "clean", **_unpack(res["clean"]["overall"])})
            if "robustness" in res:
                kind = (run.eval.get("perturbation") or {}).get("keyword_kind", "keyword")
                rows.append({"run": run.label, "condition": f"perturbed: {kind}",
                             **_unpack(res["robustness"]["perturbed_accuracy"])})
        if run.audit:
            if not run.eval:
                clean = _unpack(run.audit["clean"]["overall"])
                rows.append({"run": run.label, "condition": "clean", **clean})
            seen = {r["condition"] for r in rows if r["run"] == run.label}
            for kind, entry in run.audit["keywords"].items():
                if f"perturbed: {kind}" not in seen:
                    rows.append({"run": run.label, "condition": f"perturbed: {kind}",
                                 **_unpack(entry["measured"]["perturbed_accuracy"])})
    return rows


def _unpack(r: dict[str, Any]) -> dict[str, Any]:
    return {"rate": r["rate"], "lo": r["ci"][0], "hi": r["ci"][1], "n": r["n"]}


def _eval_table(runs: Sequence[Run]) -> Block | None:
    rows = []
    for run in runs:
        if not run.eval:
            continue
        ev = run.eval
        for s in ev["scorings"]:
            res = ev["results"][s]
            rob = res.get("robustness") or {}
            pert = ev.get("perturbation") or {}
            model, probe = Path(str(ev.get("model", ""))).name, Path(str(ev.get("probe", ""))).name
            rows.append([run.label, model, probe, s,
                         _rate(res["clean"]["overall"]), _rate(rob.get("perturbed_accuracy")),
                         _rate(rob.get("unchanged")),
                         f"{pert.get('mode', '-')} {pert.get('keyword_kind', '')}".strip()])
    if not rows:
        return None
    return Block("table", headers=["run", "model", "probe", "scoring", "clean accuracy [95% CI]",
                                   "perturbed accuracy", "unchanged predictions", "perturbation"], rows=rows)


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
            footprint.append([run.label, kind, str(run.audit["layer"]), alignment, _fmt(est.get("eta")),
                              _fmt(est.get("robust_eta")), _fmt(est.get("top1pct_variance_share")),
                              _fmt(est.get("mean_norm")), _fmt(est.get("effective_rank")), str(est.get("dim", "n/a")),
                              "rejected" if gauss.get("rejected") else ("not rejected" if gauss else "n/a")])
            robustness.append([run.label, kind, _rate(entry["measured"]["unchanged"]), _fmt(pred.get("nu")),
                               _fmt(pred.get("certified")), _fmt(pred.get("first_order")),
                               _fmt((entry.get("tuner") or {}).get("recommended_nu"))])
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
            rows.append([run.label, kind, _rate(m["clean_accuracy"]), _rate(m["perturbed_accuracy"]),
                         _fmt(m["accuracy_drop"]), _rate(m["unchanged"])])
    if not rows:
        return None
    return Block("table", headers=["run", "keywords", "clean accuracy", "perturbed accuracy", "accuracy drop",
                                   "unchanged predictions"], rows=rows)


#: Runs per per-subject table (two columns each): a dozen runs become four tables that fit a window.
SUBJECT_RUNS = 3


def _subject_table(runs: Sequence[Run]) -> Block | None:
    """Per subject, each run's clean and perturbed accuracy (one table; see :func:`_subject_tables`)."""
    cols, data = [], {}
    for run in runs:
        if not run.eval:
            continue
        res = run.eval["results"][run.eval["primary"]]
        for cond in ("clean", "perturbed"):
            if cond in res:
                cols.append(f"{run.label}: {cond}")
                for subject, r in res[cond]["by_subject"].items():
                    data.setdefault(subject, {})[cols[-1]] = f"{_fmt(r['rate'])} ({r['k']}/{r['n']})"
    if not cols:
        return None
    rows = [[s, *(data[s].get(c, "-") for c in cols)] for s in sorted(data)]
    return Block("table", headers=["subject", *cols], rows=rows)


def _subject_tables(runs: Sequence[Run]) -> list[Block]:
    """:func:`_subject_table` split into tables of at most :data:`SUBJECT_RUNS` runs each."""
    with_eval = [r for r in runs if r.eval]
    groups = [with_eval[i:i + SUBJECT_RUNS] for i in range(0, len(with_eval), SUBJECT_RUNS)]
    return [t for t in (_subject_table(g) for g in groups) if t is not None]


def _examples(runs: Sequence[Run]) -> Block | None:
    rows = []
    for run in runs:
        primary = (run.eval or {}).get("primary", "")
        perturbed = [r for r in run.records if "perturbation" in r]
        # questions whose prediction the keyword changed first: they show what the keyword does
        perturbed.sort(key=lambda r: (r["clean"].get(primary, {}).get("pred")
                                      == r["perturbed"].get(primary, {}).get("pred"), r["index"]))
        for rec in perturbed[:EXAMPLES]:
            pert = rec["perturbation"]
            rows.append([run.label, rec.get("subject", ""), rec.get("question", ""),
                         rec["perturbed_question"],
                         f"{pert.get('mode')} {pert.get('keyword')!s} @ word {pert.get('position')}",
                         _fmt(rec["clean"].get(primary, {}).get("pred")
                              != rec["perturbed"].get(primary, {}).get("pred"))])
    if not rows:
        return None
    return Block("table", headers=["run", "subject", "clean question", "perturbed question", "perturbation",
                                   "prediction changed"], rows=rows)


# ----------------------------------------------------------------------------- figures

def _accuracy_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = _accuracy_rows(runs)
    if not rows:
        return None
    labels = list(dict.fromkeys(r["run"] for r in rows))
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) * max(1, len(conds)) / 2), 3.6))
    sns.barplot(x=[r["run"] for r in rows], y=[r["rate"] for r in rows], hue=[r["condition"] for r in rows],
                order=labels, hue_order=conds, ax=ax, errorbar=None)
    width = 0.8 / len(conds)
    for r in rows:
        x = labels.index(r["run"]) - 0.4 + width * (conds.index(r["condition"]) + 0.5)
        ax.errorbar(x, r["rate"], yerr=[[r["rate"] - r["lo"]], [r["hi"] - r["rate"]]], fmt="none",
                    ecolor="black", capsize=3, lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_xlabel("")
    legend_outside(ax, 8)
    ax.tick_params(axis="x", labelrotation=15)
    return png(fig)


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


def _probe_name(run: Run) -> str:
    """The probe a run was scored on (file stem, with its subject filter), to keep probes apart."""
    source = run.eval or run.audit or {}
    name = Path(str(source.get("probe", "probe"))).stem
    return f"{name} [{source['subjects']}]" if source.get("subjects") else name


def _ablation_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Accuracy per (method, nu, condition and probe): accuracies of different probes (a forget probe and a
    retain probe) are separate series, never averaged together; the same series over seeds is."""
    rows = []
    for run in runs:
        if run.nu is None:
            continue
        method = run.info.get("method") or "model"
        probe = _probe_name(run)
        for r in _accuracy_rows([run]):
            rows.append({"method": method, "nu": run.nu, "metric": f"{r['condition']} ({probe})", "value": r["rate"]})
    return rows


def _ablation_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = _ablation_rows(runs)
    if len({r["nu"] for r in rows}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(x=[r["nu"] for r in rows], y=[r["value"] for r in rows], hue=[r["metric"] for r in rows],
                 style=[r["method"] for r in rows], marker="o", ax=ax)
    ax.set_xlabel("RNA noise std nu")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    legend_outside(ax, 7)
    return png(fig)


def _metrics_figure(runs: Sequence[Run]) -> bytes | None:
    import matplotlib.pyplot as plt

    series = []
    for run in runs:
        keys = sorted({k for row in run.metrics for k, v in row.items()
                       if (k in LOSS_KEYS or "loss" in k) and isinstance(v, (int, float)) and not isinstance(v, bool)})
        for key in keys:
            pts = [(row.get("step", i), row[key]) for i, row in enumerate(run.metrics) if key in row]
            series.append((f"{run.label}: {key}", pts))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, pts in series:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    legend_outside(ax, 6)
    return png(fig)


def _eval_figure(runs: Sequence[Run]) -> bytes | None:
    """One panel per ``eval/<metric>/<key>`` column of metrics.jsonl (train.eval), one line per run."""
    import matplotlib.pyplot as plt

    keys = sorted({k for run in runs for row in run.metrics for k in row if k.startswith("eval/")})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for run in runs:
            pts = [(row.get("step", i), row[key]) for i, row in enumerate(run.metrics) if key in row]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run.label)
        ax.set_title(key[len("eval/"):], fontsize=8)
        ax.set_xlabel("step")
    legend_outside(axes[0][-1], 6)
    fig.tight_layout()
    return png(fig)


# ----------------------------------------------------------------------------- assembly

def build_blocks(runs: Sequence[Run], title: str) -> list[Block]:
    """The report's content for ``runs``."""
    import matplotlib

    matplotlib.use("Agg")
    blocks = [Block("h1", title),
              Block("p", "Runs: " + ", ".join(f"{r.label} ({r.path})" for r in runs) + ". Intervals are "
                    "binomial 95% intervals; 'unchanged' is the fraction of questions whose predicted "
                    "choice is the same with and without the keyword.")]
    table = _eval_table(runs)
    fig = _accuracy_figure(runs)
    if table or fig:
        blocks.append(Block("h2", "Accuracy, clean vs. perturbed"))
        if fig:
            blocks.append(Block("figure", "Accuracy on clean and keyword-perturbed questions per run "
                                "(primary scoring)", png=fig, name="accuracy"))
        if table:
            blocks.append(table)
    effect = _effect_table(runs)
    if effect:
        blocks += [Block("h2", "Keyword effect: forget vs. control (latent-audit probe)"),
                   Block("p", "A backdoor shows as a larger drop for forget keywords than for the "
                         "length-matched control words, on the unlearned model but not on the base model."),
                   effect]
    subjects = _subject_tables(runs)
    if subjects:
        blocks += [Block("h2", "Accuracy per subject"), *subjects]
    audit = _audit_tables(runs)
    if audit:
        blocks += [Block("h2", "Latent audit (Assumption 1, C1)"),
                   Block("p", "eta: isotropic std of the centred latent differences at the layer; "
                         "Gaussianity: tests on random 1-D projections (rejected = some projection is not "
                         "Gaussian at the tests' level)."), audit[0],
                   Block("h2", "Robustness: measured vs predicted (C6, C7)"), audit[1]]
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
    fig = _ablation_figure(runs)
    if fig:
        blocks += [Block("h2", "Noise-scale (nu) ablation"),
                   Block("figure", "Accuracy against the RNA noise std across runs", png=fig,
                         name="nu_ablation")]
    examples = _examples(runs)
    if examples:
        blocks += [Block("h2", "Example perturbed questions"), examples]
    fig = _metrics_figure(runs)
    if fig:
        blocks += [Block("h2", "Training losses"),
                   Block("figure", "Loss curves from metrics.jsonl", png=fig, name="training_losses")]
    curves = _eval_figure(runs)
    if curves:
        blocks += [Block("h2", "Evaluation during training"),
                   Block("figure", "Registered metrics (train.eval) after each evaluated step", png=curves,
                         name="eval_during_training")]
    return blocks


def unique_labels(runs: Sequence[Run]) -> None:
    """Suffix labels shared by several runs with as many trailing path parts as make them unique
    (e.g. ``rmu [seed-0/eval-retain]`` vs. ``rmu [seed-1/eval-retain]``)."""
    base = [r.label for r in runs]
    for depth in range(1, max(len(r.path.resolve().parts) for r in runs) + 1):
        labels = [
            f"{b} [{'/'.join(r.path.resolve().parts[-depth:])}]" if base.count(b) > 1 else b
            for b, r in zip(base, runs, strict=True)
        ]
        if len(set(labels)) == len(labels):
            break
    for run, label in zip(runs, labels, strict=True):
        run.label = label


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 title: str = "RNA robustness report") -> tuple[Path, Path]:
    """Write ``report.md`` (+ ``figures/*.png``) and self-contained ``report.html`` to ``out_dir``."""
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise RNAError("no run directories given", where="report", fix="pass at least one run directory")
    unique_labels(runs)
    blocks = build_blocks(runs, title)
    return write_document(blocks, out_dir, title)
