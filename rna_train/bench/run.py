"""``rna bench``: this trainer vs a reference-style execution, RNA on vs off, and scoring speed.

Every measurement runs in a fresh Python process (``worker.py``), and the configurations being
compared alternate within one call (round 1: A then B, round 2: B then A, ...), so load from other
users of the machine hits both alike; figures are medians over every timed step of every round
and are printed as ratios. Peak memory is ``max_memory_allocated`` on CUDA; on CPU the peak RSS
minus the peak RSS of an idle worker that imported the same modules.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError

log = logging.getLogger("rna.bench")

#: Model shapes (LlamaConfig keys). CPU: 32 layers, narrow enough for 2 cores, wide enough that
#: weights dominate memory. CUDA: Mistral-7B / Zephyr-7B.
SHAPES: dict[str, dict[str, int]] = {
    "cpu": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 32, "num_attention_heads": 8,
            "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 1024},
    "cuda": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096},
}
SETTINGS: dict[str, dict[str, Any]] = {
    "cpu": {"dtype": "fp32", "batch": 4, "seq": 64, "layer": 7},
    "cuda": {"dtype": "bf16", "batch": 4, "seq": 512, "layer": 7},
}
METHODS = ("rmu", "adaptive_rmu", "rsv", "npo_kl", "simnpo_kl")
#: Methods measured with RNA on vs off, and the RNA modes measured for each (target: the paper's).
RNA_METHODS: dict[str, tuple[str, ...]] = {"rmu": ("target",), "npo_kl": ("target", "input")}
RNA_NU = 0.01


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "rna_train.bench.worker", json.dumps(spec)], capture_output=True,
                          text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RNAError(f"benchmark worker failed: {proc.stderr.strip().splitlines()[-1:]}", where=spec["kind"],
                       fix="run python -m rna_train.bench.worker with that spec to see the traceback")
    return json.loads(lines[-1])


def _alternate(specs: dict[str, dict[str, Any]], rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Run each named spec ``rounds`` times in fresh processes, reversing the order every round."""
    names = list(specs)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            result = _worker(specs[name])
            log.info("%s round %d: step %.3f s, peak %.0f MiB", name, r + 1, result["step_s"],
                     result["peak_bytes"] / 2**20)
            out[name].append(result)
    return out


def _summary(results: list[dict[str, Any]], idle_bytes: int) -> dict[str, Any]:
    times = [t for r in results for t in r["step_times"]]
    step = statistics.median(times)
    peak = statistics.median(r["peak_bytes"] for r in results) - idle_bytes
    prefill = statistics.median(r.get("prefill_per_step_s", 0.0) for r in results)
    return {"step_s": step, "tokens_per_s": results[0]["tokens_per_s"] * results[0]["step_s"] / step,
            "peak_mib": peak / 2**20, "steps_timed": len(times), "params": results[0]["params"],
            "prefill_per_step_s": prefill, "step_with_prefill_s": step + prefill,
            "round_medians": [statistics.median(r["step_times"]) for r in results], "step_times": times}


def _tokenizer(folder: Path) -> Path:
    """A word-level tokenizer over 400 made-up alphabetic words (synthetic questions only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu", "da", "fe", "go", "hi", "ju",
                 "be", "co", "ra", "wi", "xu"]
    words = [a + b for a in syllables for b in syllables]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "Question:", "Answer:", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<pad>")
    fast.save_pretrained(folder)
    return folder


#: Methods measured with LoRA + gradient checkpointing against the reference-style execution.
LORA_METHODS = ("npo_kl", "simnpo_kl")
LORA_RANK = 16


def run_bench(methods: Sequence[str], device: str, *, steps: int = 5, rounds: int = 2, evaluate: bool = True,
              rna: bool = True, threads: int | None = None, head_chunk_mib: float = 8.0,
              lora: bool = True, compare: bool = True) -> dict[str, Any]:
    """Measure everything and return the results (see module docstring)."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise RNAError(f"unknown benchmark method {', '.join(bad)}", where="--method",
                       fix=f"use {', '.join(METHODS)}")
    if device not in SHAPES:
        raise RNAError(f"unknown device {device!r}", where="--device", fix="use cpu or cuda")
    base = {"kind": "train", "shape": SHAPES[device], **SETTINGS[device], "steps": steps, "device": device,
            "threads": threads, "head_chunk_mib": head_chunk_mib}
    idle_bytes = _worker({"kind": "idle", "threads": threads})["peak_bytes"] if device == "cpu" else 0
    report: dict[str, Any] = {"device": device, "shape": SHAPES[device], **SETTINGS[device], "steps": steps,
                              "rounds": rounds, "idle_rss_mib": idle_bytes / 2**20, "head_chunk_mib": head_chunk_mib,
                              "methods": {}, "rna": {}, "lora": {}}
    for method in methods if compare else ():
        runs = _alternate({impl: {**base, "method": method, "impl": impl, "nu": 0.0}
                           for impl in ("trainer", "reference")}, rounds)
        mine, ref = _summary(runs["trainer"], idle_bytes), _summary(runs["reference"], idle_bytes)
        report["methods"][method] = {"trainer": mine, "reference": ref,
                                     "time_ratio": mine["step_s"] / ref["step_s"],
                                     "time_ratio_with_prefill": mine["step_with_prefill_s"] / ref["step_s"],
                                     "memory_ratio": mine["peak_mib"] / ref["peak_mib"]}
    if lora:
        for method in (m for m in LORA_METHODS if m in methods):
            report["lora"][method] = _lora_entry(base, method, rounds, idle_bytes)
    if rna:
        for method in (m for m in RNA_METHODS if m in methods):
            modes = RNA_METHODS[method]
            specs = {"off": {**base, "method": method, "impl": "trainer", "nu": 0.0},
                     **{mode: {**base, "method": method, "impl": "trainer", "nu": RNA_NU, "rna_mode": mode}
                        for mode in modes}}
            runs = _alternate(specs, rounds)
            off = _summary(runs["off"], idle_bytes)
            entry: dict[str, Any] = {"off": off}
            for mode in modes:
                on = _summary(runs[mode], idle_bytes)
                entry[mode] = {**on, "time_ratio": on["step_s"] / off["step_s"]}
            report["rna"][method] = entry
    if evaluate:
        with tempfile.TemporaryDirectory() as tmp:
            spec = {"kind": "eval", "shape": SHAPES[device], "dtype": SETTINGS[device]["dtype"], "device": device,
                    "questions": 12, "context_words": 60, "repeats": 3, "tokenizer": str(_tokenizer(Path(tmp))),
                    "threads": threads}
            result = _worker(spec)
        result["speedup"] = result["per_choice_s"] / result["shared_s"]
        report["eval"] = result
    return report


def _lora_entry(base: dict[str, Any], method: str, rounds: int, idle_bytes: int) -> dict[str, Any]:
    """The trainer with LoRA (rank :data:`LORA_RANK`, on the three ``down_proj`` matrices) and gradient
    checkpointing, and the plain trainer, against reference-style full fine-tuning (two models,
    every weight trained) and reference-style training of the three matrices, in one call."""
    ref = {**base, "method": method, "impl": "reference", "nu": 0.0}
    specs = {"reference, all weights": {**ref, "all_weights": True}, "reference, 3 matrices": ref,
             "trainer, LoRA + GC": {**base, "method": method, "impl": "trainer", "nu": 0.0, "lora": LORA_RANK,
                                    "checkpointing": True},
             "trainer": {**base, "method": method, "impl": "trainer", "nu": 0.0}}
    runs = _alternate(specs, rounds)
    refs = {name: _summary(runs[name], idle_bytes) for name in ("reference, all weights", "reference, 3 matrices")}
    entry: dict[str, Any] = {"rank": LORA_RANK, **refs}
    for name in ("trainer, LoRA + GC", "trainer"):
        mine = _summary(runs[name], idle_bytes)
        entry[name] = dict(mine)
        for ref_name, r in refs.items():
            entry[name][f"vs {ref_name}"] = {"time_ratio": mine["step_s"] / r["step_s"],
                                             "time_ratio_with_prefill": mine["step_with_prefill_s"] / r["step_s"],
                                             "memory_ratio": mine["peak_mib"] / r["peak_mib"]}
    return entry


def format_report(report: dict[str, Any]) -> str:
    """The tables printed by ``rna bench``."""
    shape = report["shape"]
    lines = [f"device {report['device']}, {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
             f"{report['dtype']}, batch {report['batch']} x {report['seq']} (forget + retain), l = {report['layer']}, "
             f"median of {report['steps']} steps x {report['rounds']} fresh-process rounds, "
             f"train.head_chunk_mib = {report['head_chunk_mib']}",
             "", "| method | execution | step s | reference pass s/step | tokens/s | peak MiB | time ratio "
             "| with reference pass | memory ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for method, entry in report["methods"].items():
        for impl in ("trainer", "reference"):
            e = entry[impl]
            ratios = (f"{entry['time_ratio']:.3f} | {entry['time_ratio_with_prefill']:.3f} | "
                      f"{entry['memory_ratio']:.3f}" if impl == "trainer" else "1 | 1 | 1")
            lines.append(f"| {method} | {impl} | {e['step_s']:.3f} | {e['prefill_per_step_s']:.3f} "
                         f"| {e['tokens_per_s']:.0f} | {e['peak_mib']:.0f} | {ratios} |")
    if report.get("lora"):
        lines += ["", "| method | trainer | against | step s | reference step s | time ratio | with reference pass "
                  "| peak MiB | reference peak MiB | memory ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for method, entry in report["lora"].items():
            for name in ("trainer, LoRA + GC", "trainer"):
                e = entry[name]
                for ref_name in ("reference, all weights", "reference, 3 matrices"):
                    r, ratio = entry[ref_name], e[f"vs {ref_name}"]
                    lines.append(f"| {method} | {name} | {ref_name} | {e['step_s']:.3f} | {r['step_s']:.3f} "
                                 f"| {ratio['time_ratio']:.3f} | {ratio['time_ratio_with_prefill']:.3f} "
                                 f"| {e['peak_mib']:.0f} | {r['peak_mib']:.0f} | {ratio['memory_ratio']:.3f} |")
    if report["rna"]:
        lines += ["", f"| method | RNA mode (nu={RNA_NU}) | off step s | on step s | on/off |", "|---|---|---|---|---|"]
        for method, entry in report["rna"].items():
            for mode, on in entry.items():
                if mode != "off":
                    lines.append(f"| {method} | {mode} | {entry['off']['step_s']:.3f} | {on['step_s']:.3f} "
                                 f"| {on['time_ratio']:.3f} |")
    if "eval" in report:
        e = report["eval"]
        lines += ["", "| scorer | seconds | questions/s |", "|---|---|---|",
                  f"| per choice | {e['per_choice_s']:.2f} | {e['questions'] / e['per_choice_s']:.2f} |",
                  f"| shared prefix | {e['shared_s']:.2f} | {e['questions'] / e['shared_s']:.2f} |",
                  "", f"speed-up {e['speedup']:.2f}x; largest score difference {e['max_abs_diff']:.2e}; "
                  f"same predictions: {e['same_predictions']}"]
    return "\n".join(lines)
