"""Grids of unlearning runs: ``key=v1,v2,...`` overrides x seeds, resumable, summarised with intervals.

A sweep folder holds ``sweep.json`` (the config, fixed overrides and run-folder template, fixed at
the first invocation, and every axis value given so far), one run folder per grid point (by default
``runs/key=value,key=value``; ``run_folder`` names them otherwise, e.g. ``seed-{seed}``),
``summary.json``, ``summary.md`` and ``summary.png``. Every point's config is loaded and validated
before the first run starts; a run with ``DONE`` is skipped, a started one is resumed from its
last checkpoint, so an interrupted sweep continues where it stopped. A rerun may add values to the
axes (more seeds), and ``only`` splits one grid's training between processes; the summary covers
every value given so far. A run that fails with a known error is recorded in the summary and the
sweep goes on. Metrics are the mean of each run's last ``last`` rows of ``metrics.jsonl``;
the summary averages over the ``over`` axis (``seed``) with a Student-t 95 % interval.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)

RUN_FOLDER = "runs/{name}"
"""The default run-folder template (:func:`point_folder`)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Swept keys with their values as written (YAML text), and the fixed overrides."""

    axes: dict[str, list[str]]
    fixed: list[str]

    def points(self) -> list[dict[str, str]]:
        """Every combination of the axes' values, in the order the axes were given."""
        keys = list(self.axes)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.axes.values())]


def _split_top_level(text: str) -> list[str]:
    """``text`` split at commas outside brackets, braces and quotes."""
    pieces, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces]


def parse_grid(items: Sequence[str]) -> Grid:
    """``key=v1,v2`` items become axes (commas inside ``[]``/``{}`` do not split); ``key=v`` stays fixed."""
    axes: dict[str, list[str]] = {}
    fixed: list[str] = []
    seen: set[str] = set()
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RNAError(f"grid item {item!r} has no '='", where="sweep grid", fix="write key=v1,v2 or key=value")
        if key in seen:
            raise RNAError(f"key {key!r} is given twice", where="sweep grid", fix="list each key once")
        if key == "output_dir":
            raise RNAError("output_dir is set by the sweep (one folder per point)", where="sweep grid",
                           fix="leave output_dir out; pass --out for the sweep folder")
        seen.add(key)
        values = _split_top_level(value)
        if len(values) > 1:
            if any(not v for v in values):
                raise RNAError(f"empty value in {item!r}", where="sweep grid", fix="remove the stray comma")
            if len(set(values)) != len(values):
                raise RNAError(f"repeated value in {item!r}", where="sweep grid", fix="list each value once")
            axes[key] = values
        else:
            fixed.append(f"{key}={value}")
    if not axes:
        raise RNAError("nothing to sweep: no key has several values", where="sweep grid",
                       fix="give at least one key=v1,v2 (e.g. rna.noise.nu=0.01,0.03 seed=0,1,2)")
    return Grid(axes, fixed)


def run_name(point: dict[str, str]) -> str:
    """The name of a grid point (``key=value`` pairs; path-unsafe characters replaced)."""
    return _UNSAFE.sub("_", ",".join(f"{k}={v}" for k, v in point.items()))


def point_folder(point: dict[str, str], template: str = RUN_FOLDER) -> str:
    """A point's run folder inside the sweep folder: ``template`` with ``{name}`` replaced by
    :func:`run_name` and ``{key}`` by the point's value of axis ``key`` (path-unsafe characters
    replaced), e.g. ``seed-{seed}`` gives ``seed-0``."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "name":
            return run_name(point)
        if key not in point:
            raise RNAError(f"run_folder {template!r} names {{{key}}}, which is not a swept key ({', '.join(point)})",
                           where="run_folder", fix="use {name} or {KEY} for swept keys")
        return _UNSAFE.sub("_", point[key])

    return re.sub(r"\{([^{}]*)\}", fill, template)


def shard_filter(items: Sequence[str] | Grid, shard: str) -> Callable[[dict[str, str]], bool] | None:
    """``only`` for :func:`run_sweep` that accepts every N-th point of the grid starting at I (``shard`` = "I/N").

    None for "0/1" (every point). Raises :class:`RNAError` on a malformed shard.
    """
    match = re.fullmatch(r"(\d+)/(\d+)", shard.strip())
    if not match or not int(match.group(2)) or int(match.group(1)) >= int(match.group(2)):
        raise RNAError(f"shard {shard!r} is not I/N with 0 <= I < N", where="--shard",
                       fix="e.g. --shard 0/2 in one process and --shard 1/2 in another")
    index, count = int(match.group(1)), int(match.group(2))
    if count == 1:
        return None
    grid = items if isinstance(items, Grid) else parse_grid(items)
    mine = {run_name(p) for i, p in enumerate(grid.points()) if i % count == index}
    return lambda point: run_name(point) in mine


def _folders(grid: Grid, template: str) -> list[str]:
    """Every point's run folder; refuses a template that gives two points one folder."""
    folders: dict[str, str] = {}
    for point in grid.points():
        folder = point_folder(point, template)
        if folder in folders:
            raise RNAError(f"run_folder {template!r} gives {folders[folder]} and {run_name(point)} the same folder "
                           f"{folder!r}", where="run_folder", fix="name every swept key in it, or use {name}")
        folders[folder] = run_name(point)
    return list(folders)


def _overrides(grid: Grid, point: dict[str, str], folder: Path) -> list[str]:
    # output_dir as a JSON string (valid YAML): a path is never read as a number, list or mapping
    return [*grid.fixed, *(f"{k}={v}" for k, v in point.items()), f"output_dir={json.dumps(str(folder))}"]


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically: a concurrent reader (another process training other
    points of one sweep, or a study shard) sees the old or the new file, never a partial one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_record(out: Path) -> dict[str, Any]:
    """``sweep.json`` (sweeps begun before ``run_folder`` existed used the default)."""
    return {"run_folder": RUN_FOLDER, **json.loads((out / "sweep.json").read_text())}


def _fix_grid(out: Path, config: str, grid: Grid, template: str) -> None:
    """Record the sweep in ``sweep.json``, adding new axis values to a recorded grid; refuse another
    config, other fixed overrides, other swept keys or another run-folder template."""
    record = {"config": str(config), "axes": grid.axes, "fixed": grid.fixed, "run_folder": template}
    path = out / "sweep.json"
    if path.exists():
        old = _read_record(out)
        if {**old, "axes": list(old["axes"])} != {**record, "axes": list(grid.axes)}:
            raise RNAError(f"this folder holds a sweep of another config or grid ({old})", where=str(path),
                           fix="rerun with the same config, fixed overrides and swept keys (values may be added) "
                               "to resume it, or choose another --out")
        record["axes"] = {k: [*v, *(x for x in grid.axes[k] if x not in v)] for k, v in old["axes"].items()}
        if record == old:
            return
        _folders(Grid(record["axes"], grid.fixed), template)  # old and new points must not share a folder
        log.info("sweep: %s extended to %s", path, record["axes"])
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1))


def run_sweep(config: str | Path, items: Sequence[str] | Grid, out: str | Path, *,
              metrics: Sequence[str] = ("loss",), over: str = "seed", last: int = 1, run_folder: str = RUN_FOLDER,
              only: Callable[[dict[str, str]], bool] | None = None,
              train_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Train every grid point not finished yet, then write and return the summary (:func:`summarize`).

    ``items``: ``key=v1,v2`` / ``key=value`` strings (:func:`parse_grid`), or a :class:`Grid`
    (whose axes may hold a single value). ``run_folder``: the template of each point's folder inside
    ``out`` (:func:`point_folder`; fixed at the first invocation). ``only``: train just the points
    it accepts (the others are left to another process or a later call; all are validated and
    summarised). ``train_fn``: called as ``train_fn(cfg, options, resume=...)`` per point (default
    :func:`rna_train.trainer.train`).
    """
    from rna_train.config import load_config
    from rna_train.trainer import DONE, train

    train_fn = train_fn or train
    out = Path(out)
    grid = items if isinstance(items, Grid) else parse_grid(items)
    folders = _folders(grid, run_folder)
    loaded = [(p, load_config(config, _overrides(grid, p, out / f)))  # all checked first
              for p, f in zip(grid.points(), folders, strict=True)]
    _fix_grid(out, str(config), grid, run_folder)
    failures: dict[str, str] = {}
    for i, (point, (cfg, options)) in enumerate(loaded, 1):
        if only is not None and not only(point):
            continue
        folder = Path(cfg.output_dir)
        if (folder / DONE).exists():
            log.info("sweep %d/%d %s: done, skipped", i, len(loaded), run_name(point))
            continue
        started = folder.exists() and any(folder.iterdir())
        log.info("sweep %d/%d %s%s", i, len(loaded), run_name(point), " (resuming)" if started else "")
        try:
            train_fn(cfg, options, resume=started)
        except RNAError as exc:
            log.error("sweep: %s failed: %s", run_name(point), exc)
            failures[run_name(point)] = str(exc)
    return summarize(out, metrics=metrics, over=over, last=last, failures=failures)


def _run_metrics(folder: Path, metrics: Sequence[str], last: int) -> dict[str, float] | None:
    """Means of the last ``last`` rows of a finished run's ``metrics.jsonl`` (None when unfinished)."""
    from rna_train.trainer import DONE

    if not (folder / DONE).exists():
        return None
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {}
    for m in metrics:
        values = [r[m] for r in rows[-last:] if isinstance(r.get(m), (int, float))]
        if not values:
            known = sorted(k for k, v in rows[-1].items() if isinstance(v, (int, float))) if rows else []
            raise RNAError(f"metric {m!r} is not in {folder}/metrics.jsonl (numeric columns: {known})",
                           where="--metric", fix="pick one of the listed columns")
        out[m] = sum(values) / len(values)
    return out


def _interval(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and Student-t 95 % interval of ``values`` (no interval for one value)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "n": n, "low": None, "high": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "low": mean - half, "high": mean + half}


def summarize(out: str | Path, *, metrics: Sequence[str] = ("loss",), over: str = "seed", last: int = 1,
              failures: dict[str, str] | None = None) -> dict[str, Any]:
    """Collect the finished runs of a sweep folder; write ``summary.json``/``.md``/``.png``; return the summary."""
    out = Path(out)
    record = _read_record(out)
    grid = Grid(record["axes"], record["fixed"])
    runs, groups = [], {}
    for point in grid.points():
        values = _run_metrics(out / point_folder(point, record["run_folder"]), metrics, last)
        status = "failed" if run_name(point) in (failures or {}) else "done" if values is not None else "missing"
        runs.append({"point": point, "status": status, "metrics": values})
        if values is not None:
            key = tuple((k, v) for k, v in point.items() if k != over)
            groups.setdefault(key, []).append(values)
    summary = {"axes": grid.axes, "fixed": grid.fixed, "over": over if over in grid.axes else None, "last": last,
               "runs": runs, "failures": failures or {},
               "groups": [{"point": dict(key), **{m: _interval([v[m] for v in vals]) for m in metrics}}
                          for key, vals in groups.items()]}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    write_atomic(out / "summary.md", _table(summary, metrics))
    if summary["groups"]:
        _plot(summary, metrics, out / "summary.png")
    return summary


def _fmt(stat: dict[str, Any]) -> str:
    if stat["low"] is None:
        return f"{stat['mean']:.4g} (n=1)"
    return f"{stat['mean']:.4g} [{stat['low']:.4g}, {stat['high']:.4g}] (n={stat['n']})"


def _table(summary: dict[str, Any], metrics: Sequence[str]) -> str:
    """Markdown: one row per group (mean and 95 % interval over the ``over`` axis), then failures."""
    keys = [k for k in summary["axes"] if k != summary["over"]]
    head = "| " + " | ".join([*keys, *metrics]) + " |\n|" + " --- |" * (len(keys) + len(metrics)) + "\n"
    rows = "".join("| " + " | ".join([*(g["point"][k] for k in keys), *(_fmt(g[m]) for m in metrics)]) + " |\n"
                   for g in summary["groups"])
    over = f"mean and Student-t 95 % interval over {summary['over']}; " if summary["over"] else ""
    text = f"# Sweep\n\n{over}metrics: mean of the last {summary['last']} step(s)\n\n{head}{rows}"
    missing = [r["point"] for r in summary["runs"] if r["status"] != "done"]
    if missing:
        text += "\nnot finished: " + "; ".join(run_name(p) for p in missing) + "\n"
    for name, error in summary["failures"].items():
        text += f"\nfailed: {name}: {error}\n"
    return text


def _number(text: str) -> float | None:
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _plot(summary: dict[str, Any], metrics: Sequence[str], path: Path) -> None:
    """Each metric against the first swept key (not ``over``), one line per value of the others; a sweep
    of the ``over`` axis alone (seeds) shows each run's value, the mean and its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in summary["axes"] if k != summary["over"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        if keys:
            _draw_groups(ax, summary, metric, keys)
        else:
            _draw_runs(ax, summary, metric)
        ax.set_ylabel(metric)
    fig.suptitle(f"95 % interval over {summary['over']}" if summary["over"] else "one run per point", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(path)


def _draw_groups(ax: Any, summary: dict[str, Any], metric: str, keys: list[str]) -> None:
    """Group means with their intervals against ``keys[0]``, one line per value of the other keys."""
    x_key, rest = keys[0], keys[1:]
    order = summary["axes"][x_key]
    numeric = all(_number(v) is not None for v in order)
    lines: dict[str, list[dict[str, Any]]] = {}
    for g in summary["groups"]:
        lines.setdefault(", ".join(f"{k}={g['point'][k]}" for k in rest) or metric, []).append(g)
    for label, groups in lines.items():
        groups.sort(key=lambda g: order.index(g["point"][x_key]))
        xs = [_number(g["point"][x_key]) if numeric else order.index(g["point"][x_key]) for g in groups]
        ys = [g[metric]["mean"] for g in groups]
        err = [[y - (g[metric]["low"] if g[metric]["low"] is not None else y) for y, g in zip(ys, groups)],
               [(g[metric]["high"] if g[metric]["high"] is not None else y) - y for y, g in zip(ys, groups)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(x_key)
    if len(lines) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _draw_runs(ax: Any, summary: dict[str, Any], metric: str) -> None:
    """Each finished run's value against the ``over`` axis, the mean (line) and its interval (band)."""
    over = summary["over"]
    order = summary["axes"][over]
    done = [r for r in summary["runs"] if r["metrics"] is not None]
    ax.plot([order.index(r["point"][over]) for r in done], [r["metrics"][metric] for r in done], "o", label="runs")
    stat = summary["groups"][0][metric]
    ax.axhline(stat["mean"], color="C1", label="mean")
    if stat["low"] is not None:
        ax.axhspan(stat["low"], stat["high"], color="C1", alpha=0.2, label="95 % interval")
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(over)
    ax.legend(fontsize=7)
