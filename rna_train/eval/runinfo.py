"""What a run directory says about how its checkpoint was trained (method, RNA noise).

Reads the trainer's ``config.yaml`` (``method.name``, ``rna.mode``, ``rna.noise`` as a number or a
NoiseSchedule mapping, ``rna.layer``) when present; every field is optional so evaluation works on
checkpoints that were not made by the trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping at ``path``, or ``{}`` when absent or unreadable (logged)."""
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        log.warning("%s: unreadable YAML (%s); ignoring it", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def find_config(*dirs: str | Path) -> Path | None:
    """The first ``config.yaml`` in ``dirs`` or their parents (a model folder inside a run)."""
    for d in dirs:
        base = Path(d)
        for candidate in (base / "config.yaml", base.parent / "config.yaml"):
            if candidate.is_file():
                return candidate
    return None


def training_info(config: dict[str, Any]) -> dict[str, Any]:
    """``{"method", "rna", "nu", "relative_to"}`` from a trainer config (None where unknown).

    ``nu`` is the final value of the noise schedule (``nu_end`` for annealed schedules), 0 when
    RNA is off; ``auto`` noise is reported as unknown.
    """
    method = config.get("method")
    name = method.get("name") if isinstance(method, dict) else method
    rna = config.get("rna") if isinstance(config.get("rna"), dict) else {}
    mode = rna.get("mode", "off") if rna else None
    noise = rna.get("noise") if rna else None
    nu: float | None = None
    relative, schedule = "absolute", None
    if mode == "off":
        nu = 0.0
    elif isinstance(noise, (int, float)) and not isinstance(noise, bool):
        nu = float(noise)
    elif isinstance(noise, dict) and isinstance(noise.get("nu"), (int, float)):
        end = noise.get("nu_end")
        kind = noise.get("kind", "constant")
        nu = float(end if kind in ("linear", "cosine") and end is not None else noise["nu"])
        relative = str(noise.get("relative_to", "absolute"))
        start = float(noise["nu"])
        if kind in ("linear", "cosine"):
            schedule = f"{kind} {start:g}->{nu:g}"
        elif kind != "constant":
            schedule = f"{kind} {start:g}"
    chosen = (rna.get("auto") or {}).get("chosen") if rna else None
    auto = bool(chosen) or noise == "auto" or (isinstance(noise, dict) and noise.get("nu") == "auto")
    seed = config.get("seed")
    return {"method": str(name) if name else None, "rna": mode, "nu": nu, "relative_to": relative,
            "schedule": schedule, "auto": auto, "seed": seed if isinstance(seed, int) else None}


def run_label(info: dict[str, Any], fallback: str) -> str:
    """Human label such as ``rmu +RNA(nu=0.03)`` (target mode), ``rmu +RNA-input(nu=0.1 x rms)``,
    ``npo +RNA(nu=linear 0.05->0)``, ``rmu +RNA(nu=0.4 auto)`` or ``rmu``, plus `` seed N`` when the
    config names its seed (runs of several seeds stay apart); ``fallback`` when nothing is known."""
    if not info.get("method"):
        return fallback
    seed = f" seed {info['seed']}" if info.get("seed") is not None else ""
    return _method_label(info) + seed


def _method_label(info: dict[str, Any]) -> str:
    """The method with its RNA mode and noise."""
    if info.get("rna") not in (None, "off"):
        rel = {"rms": " x rms", "robust": " x robust scale"}.get(info.get("relative_to"), "")
        if info.get("nu") is None:
            value = "auto" if info.get("auto") else "?"
        else:
            value = info.get("schedule") or f"{info['nu']:g}"
            value += " auto" if info.get("auto") else ""
        mode = "" if info.get("rna") == "target" else f"-{info['rna']}"
        return f"{info['method']} +RNA{mode}(nu={value}{rel})"
    return str(info["method"])
