"""Summary of a keyword-fragility study (:mod:`rna_train.studies.textstudy`): tables, matched-forgetting
comparison, trade-off figure and the committed ``docs/data/smollm2_summary.json``.

Why: RNA changes both how much a model forgets and how fragile it is, so comparing single runs
confounds the two. Every run is evaluated at several checkpoints (a curve of unlearning strength);
here each RNA variant's excess fragility is compared with its method's plain variant *at the same
held-out forget NLL*: per seed, the cells of the two checkpoints that bracket the target forget NLL
are interpolated linearly, then the difference of the two variants' mean excess gets a bootstrap
interval resampling seeds (separately per variant) and chunks and keywords (jointly: both variants
are scored on the same cells; :func:`rna_train.eval.bootstrap.crossed_difference`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rna_train.eval.bootstrap import crossed_bootstrap, crossed_difference
from rna_train.eval.fragility import Cells

log = logging.getLogger(__name__)

SUMMARY_FORMAT = "rna-text-study/1"


@dataclasses.dataclass
class Point:
    """One evaluated checkpoint: variant, seed, step, its numbers and (lazily) its cells."""

    variant: str
    seed: int
    step: int
    numbers: dict[str, Any]
    cells_path: Path
    _cells: Cells | None = dataclasses.field(default=None, repr=False)

    def cells(self) -> Cells:
        """The checkpoint's scored cells (read once)."""
        if self._cells is None:
            self._cells = Cells.load(self.cells_path)
        return self._cells

    @property
    def forget_nll(self) -> float:
        """Mean token NLL on held-out forget-side text."""
        return float(self.numbers["forget_heldout"]["nll"])

    def effect(self, group: str, head: int, metric: str = "nll") -> np.ndarray:
        """(chunks x group keywords) effect of one inserted word, NaN where not scored."""
        cells = self.cells()
        return cells.effect(metric, head)[:, cells.columns(group)]

    def excess(self, base: Cells, group: str, head: int, metric: str = "nll") -> np.ndarray:
        """(chunks x group keywords) effect minus the base model's, NaN where not scored."""
        return self.effect(group, head, metric) - base.effect(metric, head)[:, base.columns(group)]


def collect(out: Path, plan: Any) -> list[Point]:
    """Every finished evaluation of the plan's variants (missing ones are skipped, with a log line)."""
    points = []
    for name in plan.variants:
        variant = plan.variant(name)
        for seed in variant.seeds:
            for step in plan.method(variant.method).eval_steps:
                path = out / name / f"seed-{seed}" / f"eval-step-{step}.json"
                if path.is_file():
                    points.append(Point(name, seed, step, json.loads(path.read_text()), path.with_suffix(".cells.npz")))
                else:
                    log.info("not run yet: %s", path)
    return points


def run_row(point: Point, base: dict[str, Any], plan: Any) -> dict[str, Any]:
    """The per-(variant, seed, step) row of the summary."""
    variant = plan.variant(point.variant)
    frag = point.numbers["fragility"]
    seconds = point.cells_path.parent / "train_seconds.json"
    return {
        "variant": point.variant, "method": variant.method, "rna": variant.rna, "nu": variant.nu,
        "scale": variant.scale, "seed": point.seed, "step": point.step,
        "forget_nll": point.forget_nll, "forget_top1": point.numbers["forget_heldout"]["top1"],
        "retain_nll": point.numbers["retain_heldout"]["nll"], "retain_top1": point.numbers["retain_heldout"]["top1"],
        "retain_nll_cost": point.numbers["retain_heldout"]["nll"] - base["retain_heldout"]["nll"],
        "suffix_clean_nll": frag["clean"]["nll"], "suffix_clean_top1": frag["clean"]["top1"],
        "effect": frag["effect"]["nll"], "excess": frag.get("excess", {}).get("nll", {}),
        "excess_top1": frag.get("excess", {}).get("top1", {}), "shift": frag["shift"],
        "train_seconds": json.loads(seconds.read_text())["seconds"] if seconds.is_file() else None,
        "eval_seconds": point.numbers.get("seconds"),
    }


def pooled(points: list[Point], base: Cells, groups: list[str], head: int, n_boot: int) -> list[dict[str, Any]]:
    """Per (variant, step): means over seeds and the excess per group with a seeds x chunks x keywords interval."""
    rows = []
    keys = sorted({(p.variant, p.step) for p in points}, key=lambda k: (list(dict.fromkeys(
        q.variant for q in points)).index(k[0]), k[1]))
    for variant, step in keys:
        pts = [p for p in points if p.variant == variant and p.step == step]
        row: dict[str, Any] = {"variant": variant, "step": step, "seeds": [p.seed for p in pts],
                               "forget_nll": float(np.mean([p.forget_nll for p in pts])),
                               "retain_nll": float(np.mean([p.numbers["retain_heldout"]["nll"] for p in pts])),
                               "excess": {}}
        for group in groups:
            cube = np.stack([p.excess(base, group, head) for p in pts])
            row["excess"][group] = crossed_bootstrap(cube, axes=("seed", "chunk", "keyword"), n_boot=n_boot).to_dict()
        rows.append(row)
    return rows


def at_forget_level(points: list[Point], level: float, base: Cells, group: str, head: int) -> np.ndarray | None:
    """One run's (chunks x keywords) excess interpolated to forget NLL ``level``; None if never reached.

    ``points`` are one run's checkpoints in step order. Forget NLL need not rise monotonically with
    steps (RMU at a high learning rate oscillates), so every pair of consecutive checkpoints that
    brackets ``level`` gives one linearly interpolated model state, and the run's value is the mean
    over those crossings: each is an equally valid "this run at forgetting ``level``"."""
    curve = sorted(points, key=lambda p: p.step)
    crossings = []
    for a, b in zip(curve, curve[1:]):
        lo, hi = sorted((a.forget_nll, b.forget_nll))
        if lo <= level <= hi and hi > lo:
            w = (level - a.forget_nll) / (b.forget_nll - a.forget_nll)
            crossings.append((1 - w) * a.excess(base, group, head) + w * b.excess(base, group, head))
    return np.mean(crossings, axis=0) if crossings else None


#: Forget-NLL levels (nats/token) at which variants are compared (base model: ~4.0).
LEVELS: tuple[float, ...] = (5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0)


def matched(points: list[Point], plan: Any, base: Cells, head: int, n_boot: int, group: str = "forget",
            levels: tuple[float, ...] = LEVELS) -> list[dict[str, Any]]:
    """RNA variant minus its method's plain variant at equal held-out forget NLL (each of ``levels``
    that runs of both variants reach), with the seeds x chunks x keywords interval of the difference."""
    by_run: dict[tuple[str, int], list[Point]] = {}
    for p in points:
        by_run.setdefault((p.variant, p.seed), []).append(p)
    plain = {plan.variant(v).method: v for v in plan.variants if plan.variant(v).rna == "off"}
    rows = []
    for name in plan.variants:
        ref = plain.get(plan.variant(name).method)
        if plan.variant(name).rna == "off" or ref is None:
            continue
        for level in levels:
            cubes = {}
            for v in (name, ref):
                runs = [r for (n, _), pts in by_run.items() if n == v
                        and (r := at_forget_level(pts, level, base, group, head)) is not None]
                cubes[v] = np.stack(runs) if runs else None
            if cubes[name] is None or cubes[ref] is None:
                continue
            diff = crossed_difference(cubes[name], cubes[ref], axes=("seed", "chunk", "keyword"), n_boot=n_boot)
            rows.append({"variant": name, "reference": ref, "group": group, "forget_nll": level,
                         "seeds": [len(cubes[name]), len(cubes[ref])],
                         "excess": float(np.nanmean(cubes[name])), "reference_excess": float(np.nanmean(cubes[ref])),
                         "difference": diff.to_dict()})
    return rows


def keyword_table(points: list[Point], base: Cells, head: int) -> list[dict[str, Any]]:
    """Per keyword, for each variant at its last step: the excess NLL over base, mean over seeds and chunks."""
    last: dict[str, int] = {}
    for p in points:
        last[p.variant] = max(last.get(p.variant, 0), p.step)
    rows: dict[str, dict[str, Any]] = {}
    for p in (q for q in points if q.step == last[q.variant]):
        cells = p.cells()
        excess = cells.effect("nll", head) - base.effect("nll", head)
        for c, (word, group) in enumerate(zip(cells.keywords, cells.groups)):
            row = rows.setdefault(word, {"keyword": word, "group": group, "excess": {}})
            row["excess"].setdefault(p.variant, []).append(float(np.nanmean(excess[:, c])))
    for row in rows.values():
        row["excess"] = {v: float(np.mean(x)) for v, x in row["excess"].items()}
    return list(rows.values())


def tradeoff_figure(runs: list[dict[str, Any]], path: Path, group: str = "forget") -> Path:
    """Every evaluated checkpoint as a point against its held-out forget NLL: the ``group`` keyword
    excess (with the run's chunks x keywords interval) and the retain NLL cost; faint lines join
    each run's checkpoints in step order (forget NLL is not monotone in steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        for seed in dict.fromkeys(r["seed"] for r in runs if r["variant"] == variant):
            rows = sorted((r for r in runs if r["variant"] == variant and r["seed"] == seed), key=lambda r: r["step"])
            x = [r["forget_nll"] for r in rows]
            ex = [r["excess"][group] for r in rows]
            mean = [e["mean"] for e in ex]
            err = [[m - e["low"] for m, e in zip(mean, ex)], [e["high"] - m for m, e in zip(mean, ex)]]
            marker = "o" if "-" not in variant else ("s" if "target" in variant else "^")
            handle = axes[0].errorbar(x, mean, yerr=err, fmt=marker, ms=4, capsize=2, color=colors.get(variant),
                                      label=None if variant in colors else variant, alpha=0.85)
            colors.setdefault(variant, handle.lines[0].get_color())
            axes[0].plot(x, mean, "-", lw=0.6, alpha=0.35, color=colors[variant])
            axes[1].plot(x, [r["retain_nll_cost"] for r in rows], marker, ms=4, color=colors[variant], alpha=0.85)
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].set(xlabel="held-out forget NLL (nats/token; higher = more forgotten)",
                ylabel=f"excess NLL after one {group} word\n(nats/token, vs base; 95% CI chunks x keywords)",
                title="keyword fragility vs forgetting (every checkpoint)")
    axes[1].set(xlabel="held-out forget NLL", ylabel="held-out retain NLL - base", title="retain cost vs forgetting")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(iv: dict[str, Any]) -> str:
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def markdown(pooled_rows: list[dict[str, Any]], matched_rows: list[dict[str, Any]], groups: list[str]) -> str:
    """The pooled table and the matched-forgetting table as Markdown."""
    lines = ["| variant | step | seeds | forget NLL | retain NLL | " + " | ".join(f"excess {g}" for g in groups) + " |",
             "|---|---|---|---|---|" + "---|" * len(groups)]
    for r in pooled_rows:
        lines.append(f"| {r['variant']} | {r['step']} | {len(r['seeds'])} | {r['forget_nll']:.2f} | "
                     f"{r['retain_nll']:.3f} | " + " | ".join(_fmt(r["excess"][g]) for g in groups) + " |")
    lines += ["", "Intervals resample seeds only where a variant has several (\"seed var.\"); otherwise they are "
              "conditional on the runs (chunks x keywords only).", "",
              "| group | variant | vs | forget NLL | runs | seed var. | excess | reference excess "
              "| difference [95% CI] |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in matched_rows:
        seed_var = "yes" if min(r["seeds"]) > 1 else "no"
        lines.append(f"| {r['group']} | {r['variant']} | {r['reference']} | {r['forget_nll']:.2f} | "
                     f"{r['seeds'][0]}/{r['seeds'][1]} | {seed_var} | {r['excess']:+.3f} | "
                     f"{r['reference_excess']:+.3f} | {_fmt(r['difference'])} |")
    return "\n".join(lines)


def summarize_study(plan: Any, *, summary_path: Path | None = None, figure: Path | None = None,
                    n_boot: int = 2000) -> str:
    """Write the summary JSON (default ``<out>/summary.json``) and figure; returns the Markdown tables."""
    out = Path(plan.out)
    base_path = out / "base" / "eval.json"
    if not base_path.is_file():
        from rna_theory.errors import RNAError

        raise RNAError("the base model has not been evaluated", where=str(base_path),
                       fix="run `python experiments/smollm2/study.py run` first")
    base = json.loads(base_path.read_text())
    base_cells = Cells.load(base_path.with_suffix(".cells.npz"))
    head = plan.spec().head_tokens
    groups = list(dict.fromkeys(base_cells.groups))
    points = collect(out, plan)
    pooled_rows = pooled(points, base_cells, groups, head, n_boot)
    matched_rows = [r for g in groups for r in matched(points, plan, base_cells, head, n_boot, g)]
    doc = {"format": SUMMARY_FORMAT, "model": plan.model, "eval": dataclasses.asdict(plan.spec()),
           "base": {"forget_nll": base["forget_heldout"]["nll"], "retain_nll": base["retain_heldout"]["nll"],
                    "suffix_clean_nll": base["fragility"]["clean"]["nll"],
                    "effect": base["fragility"]["effect"]["nll"]},
           "groups": {g: [k for k, gg in zip(base_cells.keywords, base_cells.groups) if gg == g] for g in groups},
           "runs": [run_row(p, base, plan) for p in points], "pooled": pooled_rows, "matched": matched_rows,
           "keywords": keyword_table(points, base_cells, head)}
    path = summary_path or out / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if doc["runs"]:
        tradeoff_figure(doc["runs"], figure or out / "tradeoff.png")
    return markdown(pooled_rows, matched_rows, groups)
