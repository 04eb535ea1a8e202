"""Attacks on an unlearned model: does the forgotten knowledge come back? (docs/evaluation.md)

quantize: the model's linear weights at 8 and 4 bits (optimum-quanto), forget and retain texts
re-scored. relearn: a few fine-tuning steps on held-out forget texts at a few learning rates, forget
and retain texts re-scored after each step count. gcg: one adversarial token string optimised between
the prompt and the target of a few --attack-texts, transferred to the --forget texts (target NLL with
the string, with a random string, with none; --retain is not used). Scores: mean next-token NLL and
top-1 accuracy of each text's first --max-length tokens, with 95 % bootstrap intervals over texts;
--base scores the base model alongside (the level full recovery would reach). Everything is checked
(files, text fields, backend, budget, output folder) before a model loads. Writes OUT/attack.json
and prints a table.
"""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  rna attack quantize --model runs/rmu/model --base SMOLLM2 --forget bio_heldout.jsonl \\
      --retain wiki_heldout.jsonl --out runs/attack-quant
  rna attack relearn --model runs/rmu/model --attack-texts bio_attack.jsonl --forget bio_heldout.jsonl \\
      --retain wiki_heldout.jsonl --steps 0 5 10 20 --lr 1e-5 3e-5 --out runs/attack-relearn
  rna attack gcg --model runs/rmu/model --base SMOLLM2 --attack-texts bio_attack.jsonl \\
      --forget bio_heldout.jsonl --retain wiki_heldout.jsonl --gcg steps=20 --out runs/attack-gcg
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``rna attack {quantize,relearn}`` and their options."""
    parser.epilog = EXAMPLES
    parser.add_argument("attack", choices=("quantize", "relearn", "gcg"))
    parser.add_argument("--model", required=True, help="unlearned model folder (or a LoRA run's adapter/)")
    parser.add_argument("--base", default=None, help="base model folder, scored alongside (optional)")
    parser.add_argument("--forget", required=True, help="held-out forget texts (any format rna reads)")
    parser.add_argument("--retain", required=True, help="held-out retain texts")
    parser.add_argument("--attack-texts", default=None, help="relearn: forget texts to fine-tune on; gcg: to "
                        "optimise on (both held out from --forget)")
    parser.add_argument("--text-field", default="text", help="field holding the text (default: %(default)s)")
    parser.add_argument("--max-texts", type=int, default=64, help="texts scored per corpus (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens scored per text (default: %(default)s)")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4], help="quantize: bits (default: 8 4)")
    parser.add_argument("--backend", default="auto", help="quantize: auto | quanto (default: %(default)s)")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10, 20],
                        help="relearn: step counts scored (default: 0 5 10 20)")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-5, 3e-5], help="relearn: learning rates")
    parser.add_argument("--lora-rank", type=int, default=0, help="relearn: 0 = full fine-tuning, r = LoRA rank r")
    parser.add_argument("--batch-size", type=int, default=4, help="relearn: texts per step (default: %(default)s)")
    parser.add_argument("--gcg", action="append", default=[], metavar="KEY=VALUE",
                        help="gcg: budget, repeatable; keys: " + ", ".join(GCG_KEYS) + " (defaults fit 2 CPU cores)")
    parser.add_argument("--gcg-preset", choices=("cpu", "gpu"), default="cpu",
                        help="gcg: starting budget, cpu (~3 min on SmolLM2) or gpu (published scale)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--out", required=True, help="output folder (attack.json)")


GCG_KEYS = ("steps", "n_tokens", "search_width", "topk", "train_prompts", "prompt_tokens", "target_tokens",
            "heldout", "batch_size", "seed")


def gcg_spec(preset: str, pairs: list[str]) -> Any:
    """The GCG budget: the preset with ``KEY=VALUE`` pairs applied, checked."""
    from rna_theory.errors import RNAError
    from rna_train.attacks.gcg import preset_spec

    values: dict[str, int] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in GCG_KEYS or not value.strip().lstrip("-").isdigit():
            raise RNAError(f"bad --gcg {pair!r}", where="--gcg",
                           fix=f"use KEY=INTEGER, KEY one of {', '.join(GCG_KEYS)}")
        values[key] = int(value)
    return preset_spec(preset, **values)


def _texts(path: str, field: str, limit: int, where: str) -> list[str]:
    from rna_theory.errors import RNAError
    from rna_train.data import read_texts

    texts = [t for t in read_texts(path, field) if t.strip()][:limit]
    if not texts:
        raise RNAError("no texts", where=f"{where} {path}", fix="pass a file with non-empty documents")
    return texts


def run(args: argparse.Namespace) -> int:
    """Check every input, run the attack on the model (and score the base), write and print the results."""
    import json
    import sys
    import time
    from pathlib import Path

    from rna_theory.errors import RNAError
    from rna_train.attacks import quantize, relearn
    from rna_train.attacks.report import format_table
    from rna_train.eval.evaluate import check_output_folder
    from rna_train.eval.loading import load_for_eval, pick_device
    from rna_train.models import check_local_path

    if args.max_texts < 2 or args.max_length < 2:
        raise RNAError("--max-texts and --max-length must be at least 2", where="rna attack", fix="raise them")
    corpora = {"forget": _texts(args.forget, args.text_field, args.max_texts, "--forget"),
               "retain": _texts(args.retain, args.text_field, args.max_texts, "--retain")}
    if args.attack == "quantize":
        quantize.resolve_backend(args.backend)
        bad = [b for b in args.bits if b not in quantize.BITS]
        if bad:
            raise RNAError(f"cannot quantize to {bad} bits", where="--bits", fix="use 8 and/or 4")
    else:
        if not args.attack_texts:
            raise RNAError(f"{args.attack} needs the texts to attack with", where="--attack-texts",
                           fix="pass held-out forget texts (not the ones in --forget)")
        attack_texts = _texts(args.attack_texts, args.text_field, 10**9, "--attack-texts")
        spec = gcg_spec(args.gcg_preset, args.gcg) if args.attack == "gcg" else None
        if args.lora_rank < 0 or args.batch_size < 1 or any(lr <= 0 for lr in args.lr):
            raise RNAError("--lora-rank >= 0, --batch-size >= 1 and --lr > 0 are required", where="rna attack",
                           fix="fix the value")
    for where, path in (("--model", args.model), ("--base", args.base)):
        if path:
            check_local_path(path, where)
    check_output_folder(Path(args.out))
    pick_device(args.device)
    start = time.perf_counter()
    result = {"attack": args.attack, "model": args.model, "base": args.base, "texts": args.max_texts,
              "max_length": args.max_length}
    model, tok = load_for_eval(args.model, device=args.device)
    if args.attack == "gcg":
        from rna_train.attacks import gcg

        base = load_for_eval(args.base, device=args.device) if args.base else None
        result["results"] = gcg.run(model, tok, attack_texts, corpora["forget"], spec, base=base)
    elif args.attack == "quantize":
        result["results"] = quantize.run(model, tok, corpora, bits=tuple(args.bits), max_length=args.max_length)
    else:
        result["results"] = relearn.run(model, tok, attack_texts, corpora, steps=args.steps, lrs=args.lr,
                                        batch_size=args.batch_size, max_length=args.max_length,
                                        lora_rank=args.lora_rank)
    if args.base and args.attack != "gcg":
        from rna_train.attacks.textnll import summary

        base, base_tok = load_for_eval(args.base, device=args.device)
        result["base_scores"] = summary(base, base_tok, corpora, max_length=args.max_length)
    result["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack.json").write_text(json.dumps(result, indent=1))
    sys.stdout.write(format_table(result) + "\n")
    return 0
