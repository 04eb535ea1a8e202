"""Shared-prefix (KV-cached) vs straightforward scoring of the text-mode fragility evaluation.

Scores the same chunks (every condition: clean + one per keyword) with
:func:`rna_train.eval.tokenscores.shared_prefix_scores` and with
:func:`rna_train.eval.tokenscores.plain_scores`, alternating, and prints seconds, the speed-up and
how far the two disagree (per token, per cell mean NLL, top-1 hits). docs/benchmarks.md has the figures.

    python experiments/bench/fragility_scoring.py                 # SmolLM2-135M (rna assets fetch smollm2 wikipedia)
    python experiments/bench/fragility_scoring.py --chunks 8 --keywords 24 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import torch


def main() -> int:
    """Time both scorers on the same cells and print a JSON record."""
    from rna_train.data import read_texts
    from rna_train.eval.fragility import TextSpec, build_items, keyword_ids
    from rna_train.eval.keywords import builtin_keywords
    from rna_train.eval.loading import load_for_eval
    from rna_train.eval.scoring import pad_id
    from rna_train.eval.tokenscores import plain_scores, shared_prefix_scores
    from rna_train.studies.assets import require

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the smollm2 asset)")
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--keywords", type=int, default=24, help="conditions per chunk besides the clean one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer", type=int, default=6, help="hidden states of this layer are kept too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    model, tok = load_for_eval(args.model or str(require("smollm2")))
    texts = read_texts(require("wikipedia") / "retain.jsonl")
    spec = TextSpec(n_chunks=args.chunks)
    items = build_items(texts, tok, spec)
    k = spec.suffix_tokens
    words = (builtin_keywords("bio") + builtin_keywords("control"))[:args.keywords]
    kw = keyword_ids(tok, words)
    groups = [(it.prefix_ids, [list(it.suffix_ids)] + [k + list(it.suffix_ids) for k in kw]) for it in items]
    times: dict[str, list[float]] = {"plain": [], "shared_prefix": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain_scores), ("shared_prefix", shared_prefix_scores)):
            t0 = time.perf_counter()
            results[name] = fn(model, groups, layer=args.layer, batch_size=64, pad_id=pad_id(tok))
            times[name].append(time.perf_counter() - t0)
    token = [np.abs(a.logprobs - b.logprobs).max() for ga, gb in zip(results["plain"], results["shared_prefix"])
             for a, b in zip(ga, gb)]
    cell = [abs(a.logprobs[-k:].mean() - b.logprobs[-k:].mean())
            for ga, gb in zip(results["plain"], results["shared_prefix"]) for a, b in zip(ga, gb)]
    agree = np.mean([np.array_equal(a.top1, b.top1) for ga, gb in zip(results["plain"], results["shared_prefix"])
                     for a, b in zip(ga, gb)])
    med = {k: float(np.median(v)) for k, v in times.items()}
    record = {"chunks": len(items), "conditions_per_chunk": 1 + len(kw), "threads": args.threads,
              "seconds": times, "median_seconds": med, "speedup": med["plain"] / med["shared_prefix"],
              "max_token_logprob_diff": float(max(token)), "max_cell_mean_nll_diff": float(max(cell)),
              "top1_identical_share": float(agree), "dtype": str(next(model.parameters()).dtype)}
    sys.stdout.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
