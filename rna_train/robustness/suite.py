"""Run the robustness suite: every chosen section on the base model (where the section scores it)
and on each unlearned model, resumably, then the report.

Output folder::

    suite.yaml                      the resolved config (a rerun with other settings is refused)
    sections/<section>/<name>.json  one model's result and wall time, written atomically when done
    sections/<section>/<name>/      extra files of a section (e.g. keyword_text's cells.npz)
    robustness.json                 every result, by section and model, with timings
    report.md, report.html          the report (rna_train.robustness.report)

A rerun skips every finished ``<name>.json``, so an interrupted suite continues where it stopped.
Models are loaded one at a time (the base stays loaded: several sections compare with it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from rna_theory.errors import RNAError
from rna_train.robustness.config import SuiteConfig
from rna_train.schema import to_dict

log = logging.getLogger(__name__)

FORMAT = "rna-robustness/1"


@dataclasses.dataclass
class Context:
    """What a section's ``run(ctx, name)`` reads: the config, the texts, the models, the folder."""

    cfg: SuiteConfig
    out: Path
    labels: dict[str, str]  # name -> model path ("base" included)
    _texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    _models: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)

    def texts(self, key: str, limit: int | None = None) -> list[str]:
        """Non-empty texts of the config's file ``key`` (forget, retain, attack_texts, forget_corpus)."""
        if key not in self._texts:
            from rna_train.data import read_texts

            path = getattr(self.cfg, key) or (self.cfg.attack_texts if key == "forget_corpus" else None)
            texts = [t for t in read_texts(path, self.cfg.text_field) if t.strip()] if path else []
            if not texts:
                raise RNAError("no texts", where=f"{key}={path}", fix="pass a file with non-empty documents")
            self._texts[key] = texts
        return self._texts[key][:limit]

    def model(self, name: str) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``name``; the base stays loaded, other models replace each other."""
        if name not in self._models:
            from rna_train.eval.loading import load_for_eval

            for other in [k for k in self._models if k != "base"]:
                del self._models[other]
            log.info("loading %s (%s)", name, self.labels[name])
            self._models[name] = load_for_eval(self.labels[name], device=self.cfg.device)
        return self._models[name]

    def folder(self, section: str, name: str) -> Path:
        """Where section ``section`` may keep extra files for model ``name``."""
        return self.out / "sections" / section / name

    def result(self, section: str, name: str) -> dict[str, Any] | None:
        """A finished result (e.g. the base model's, which a section compares with), or None."""
        path = self.out / "sections" / section / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8"))["result"] if path.is_file() else None


def model_labels(cfg: SuiteConfig) -> dict[str, str]:
    """``{name: path}``: ``base`` first, then each model under its label (given, else from its
    training config: method, RNA mode, nu, seed; else its folder), made unique."""
    from rna_train.eval.runinfo import find_config, read_config, run_label, training_info

    names: dict[str, str] = {"base": str(cfg.base)}
    for i, path in enumerate(cfg.models):
        if cfg.labels:
            label = cfg.labels[i]
        else:
            found = find_config(path)
            label = run_label(training_info(read_config(found)) if found else {}, Path(path).name or path)
        unique, n = label, 2
        while unique in names:
            unique, n = f"{label} ({n})", n + 1
        names[unique] = str(path)
    return names


def _check_folder(out: Path, cfg: SuiteConfig) -> None:
    """Refuse an output folder holding another suite's results; write the config into a new one."""
    from rna_train.eval.evaluate import check_output_folder

    check_output_folder(out)
    saved = out / "suite.yaml"
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if saved.is_file():
        from rna_train.schema import from_dict

        # compared as configs (a key added to SuiteConfig since, at its default, is no difference)
        try:
            before = to_dict(from_dict(SuiteConfig, yaml.safe_load(saved.read_text(encoding="utf-8"))))
        except (RNAError, yaml.YAMLError) as exc:
            raise RNAError(f"the saved suite config cannot be read by this version ({exc})", where=str(saved),
                           fix="pass a new --out folder (or restore the version that wrote it)") from None
        if before != to_dict(cfg):
            raise RNAError("this folder holds a suite run with other settings", where=str(out),
                           fix="rerun with the same settings to resume, or pass another --out")
    elif out.exists() and any(out.iterdir()):
        raise RNAError("the output folder is not empty and holds no suite run", where=str(out),
                       fix="pass a new or empty --out folder")
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(text, encoding="utf-8")


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _jobs(cfg: SuiteConfig, names: dict[str, str]) -> list[tuple[str, str]]:
    """(name, section) in run order: every section of the base, then of each model."""
    from rna_train.eval.registry import sections

    units = sections()
    return [(name, s) for name in names for s in cfg.sections if name != "base" or units[s].section.on_base]


def run_suite(cfg: SuiteConfig, out: str | Path) -> dict[str, Any]:
    """Run (or resume) the suite into ``out``; returns the ``robustness.json`` document."""
    from rna_train.eval.registry import sections
    from rna_train.progress import bar

    out = Path(out)
    _check_folder(out, cfg)
    names = model_labels(cfg)
    ctx = Context(cfg, out, names)
    units = sections()
    for name, section in bar(_jobs(cfg, names), desc="robustness", unit="section"):
        path = out / "sections" / section / f"{name}.json"
        if path.is_file():
            log.info("%s on %s: done before, skipped", section, name)
            continue
        start = time.perf_counter()
        result = units[section].section.run(ctx, name)
        seconds = time.perf_counter() - start
        _write_atomic(path, {"section": section, "model": name, "path": names[name], "seconds": seconds,
                             "result": result})
        log.info("%s on %s: %.1f s", section, name, seconds)
    return collect(out)


def collect(out: str | Path) -> dict[str, Any]:
    """``robustness.json`` assembled from the section files of ``out`` (and written there)."""
    out = Path(out)
    cfg = yaml.safe_load((out / "suite.yaml").read_text(encoding="utf-8"))
    from rna_train.schema import from_dict

    doc: dict[str, Any] = {"format": FORMAT, "config": cfg, "models": model_labels(from_dict(SuiteConfig, cfg)),
                           "sections": {}, "seconds": {}}
    for section in cfg["sections"]:
        for path in sorted((out / "sections" / section).glob("*.json")):
            entry = json.loads(path.read_text(encoding="utf-8"))
            doc["sections"].setdefault(section, {})[entry["model"]] = entry["result"]
            doc["seconds"].setdefault(section, {})[entry["model"]] = entry["seconds"]
    _write_atomic(out / "robustness.json", doc)
    return doc

