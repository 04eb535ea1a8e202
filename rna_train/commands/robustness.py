"""The whole robustness suite on one or more unlearned models against their base model: held-out
text (forgetting and cost), MMLU through lm-eval clean and SARS-CoV-2-perturbed, keyword fragility
on text, quantization, relearning and GCG attacks, every one with intervals, run on the base model
too (the reference, and the control for each attack). One HTML report (OUT/report.html) with a
summary table, the wall time of each section and a figure per section.

Settings: --config FILE (YAML) and KEY=VALUE overrides (keys: rna robustness --help-config);
sections: text_nll, mmlu, keyword_text, quantize, relearn, gcg (sections=[...] chooses). Every
input, section setting and requirement is checked before a model loads. Resumable: rerunning the
same command skips finished sections. Cost on SmolLM2-135M, 2 CPU cores: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import re

EXAMPLES = """examples:
  rna robustness runs/rmu/model runs/rmu-rna/model --base SMOLLM2 --forget bio_heldout.jsonl \\
      --retain wiki_heldout.jsonl --attack-texts bio_attack.jsonl --forget-corpus bio_train.jsonl \\
      --out runs/robustness
  rna robustness runs/rmu/model --base SMOLLM2 ... --out runs/robustness-quick \\
      sections=[text_nll,quantize,gcg] gcg.steps=10 relearn.lrs=[3e-5]
  rna robustness --report-only --out runs/robustness
"""

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Models and overrides (positional), inputs, config file, output folder."""
    parser.epilog = EXAMPLES
    parser.add_argument("overrides", nargs="*", metavar="MODEL | KEY=VALUE",
                        help="unlearned model folders, then any config overrides")
    parser.add_argument("--base", default=None, help="base model folder (required)")
    parser.add_argument("--forget", default=None, help="held-out forget texts")
    parser.add_argument("--retain", default=None, help="held-out retain texts")
    parser.add_argument("--attack-texts", default=None, help="forget texts for relearn and GCG, held out from --forget")
    parser.add_argument("--forget-corpus", default=None,
                        help="forget training corpus the keyword words are mined from (default: --attack-texts)")
    parser.add_argument("--label", action="append", default=[], help="a model's name in the report (one per model)")
    parser.add_argument("--config", default=None, help="YAML suite config (overrides and options apply on top)")
    parser.add_argument("--out", default=None, help="output folder, required (created; a rerun resumes it)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report of a finished --out")
    parser.add_argument("--help-config", action="store_true", help="list every config key with its default")


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional items as (models, overrides): ``key=value`` unless it is an existing path."""
    from pathlib import Path

    models, overrides = [], []
    for item in items:
        (overrides if _OVERRIDE.match(item) and not Path(item).exists() else models).append(item)
    return models, overrides


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """``key (type, default ...): help`` for every key of the suite config, nested blocks dotted."""
    import dataclasses

    from rna_train.schema import describe

    lines = []
    for key, type_name, default, doc in describe(cls):
        if dataclasses.is_dataclass(default):
            lines += config_keys(type(default), f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} ({type_name}, default {default!r}): {doc}")
    return lines


def _overrides(args: argparse.Namespace) -> list[str]:
    import json

    models, given = split_items(args.overrides)
    out = []
    for key in ("base", "forget", "retain", "attack_texts", "forget_corpus", "device"):
        value = getattr(args, key)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    if models:
        out.append(f"models={json.dumps(models)}")
    if args.label:
        out.append(f"labels={json.dumps(args.label)}")
    return out + given


def run(args: argparse.Namespace) -> int:
    """Check everything, run (or resume) the suite, write and name the report, print the summary."""
    import sys
    from pathlib import Path

    from rna_train.robustness.report import write_report
    from rna_train.robustness.suite import collect, run_suite

    if args.help_config:
        from rna_train.robustness.config import SuiteConfig

        sys.stdout.write("".join(f"{line}\n" for line in config_keys(SuiteConfig)))
        return 0
    from rna_theory.errors import RNAError

    if not args.out:
        raise RNAError("no output folder", where="--out", fix="pass --out FOLDER (a rerun with it resumes)")
    if args.report_only:
        if not (Path(args.out) / "suite.yaml").is_file():
            raise RNAError("no suite run here", where=args.out, fix="point --out at an rna robustness folder")
        doc = collect(args.out)
    else:
        from rna_train.robustness.config import load_suite

        doc = run_suite(load_suite(args.config, _overrides(args)), args.out)
    page = write_report(doc, args.out)
    parts = (Path(args.out) / "report.md").read_text(encoding="utf-8").split("\n## ")
    sys.stdout.write("\n## ".join(parts[:3]) + "\n")  # the header, the summary and the wall times
    sys.stdout.write(f"report: {page}\n")
    return 0
