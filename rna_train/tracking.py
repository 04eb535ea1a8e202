"""Experiment trackers through accelerate's tracker interface (TensorBoard, wandb, trackio, mlflow).

``train.tracker`` names one; ``auto`` (the default) is TensorBoard when it is installed (offline,
event files under ``OUTPUT_DIR/tensorboard``) and none otherwise. ``metrics.jsonl`` is written in
every case; a tracker gets the same numeric values per step and the resolved config as
hyper-parameters.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from rna_theory.errors import RNAError

TRACKERS = ("auto", "none", "tensorboard", "wandb", "trackio", "mlflow")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve(name: str) -> str | None:
    """The accelerate tracker to use for ``train.tracker=name`` (None: no tracker); checks the package."""
    if name == "none":
        return None
    if name == "auto":
        return "tensorboard" if _installed("tensorboard") else None
    if not _installed(name):
        raise RNAError(f"train.tracker={name} needs the {name} package, which is not installed",
                       where="train.tracker",
                       fix=f"pip install {name}, or set train.tracker=none (metrics.jsonl is written in any case)")
    return name


def project_name(tracker: str) -> str:
    """accelerate's project name: the TensorBoard sub-folder of the run (``tensorboard/``), else ``rna``."""
    return "tensorboard" if tracker == "tensorboard" else "rna"


def hyperparameters(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The resolved config flattened to ``a.b.c`` keys with scalar values (lists and None as JSON text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(hyperparameters(value, name))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row (the topic name stays in metrics.jsonl)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k != "step"}
