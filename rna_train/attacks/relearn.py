"""Relearning attack: fine-tune the unlearned model for a few steps on a small held-out forget subset
and re-score held-out forget (and retain) texts after each of several step counts, at a few
learning rates. Knowledge that was hidden rather than removed comes back in a handful of steps.

Training: next-token NLL of the attack texts, AdamW, batches chosen by
:func:`rna_train.data.batch_indices` (seeded), the model in eval mode (no dropout). ``lora_rank``
0 updates every parameter; r > 0 trains rank-r adapters on every decoder layer's default
projection (:mod:`rna_train.lora`). The model passed in is never modified.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)


def _trainable(model: Any, lora_rank: int, seed: int) -> list[torch.nn.Parameter]:
    from rna_train import arch, lora
    from rna_train.models import select_trainable

    if not lora_rank:
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    names = select_trainable(model, range(arch.num_layers(model)))
    names = lora.inject(model, names, rank=lora_rank, alpha=None, dropout=0.0, seed=seed)
    params = dict(model.named_parameters())
    return [params[n] for n in names]


def relearn_curve(model: Any, tokenizer: Any, attack_texts: Sequence[str], corpora: dict[str, Sequence[str]], *,
                  steps: Sequence[int] = (0, 5, 10, 20), lr: float = 1e-5, batch_size: int = 4, max_length: int = 64,
                  lora_rank: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Scores of ``corpora`` after each of ``steps`` fine-tuning steps on ``attack_texts`` at ``lr``."""
    from rna_train.attacks.textnll import summary
    from rna_train.data import Corpus, batch_indices, stream_id, tokenize

    if not attack_texts:
        raise RNAError("the relearning subset is empty", where="--attack-texts", fix="pass held-out forget texts")
    if any(s < 0 for s in steps):
        raise RNAError(f"negative step count in {list(steps)}", where="--steps", fix="use counts >= 0")
    sequences = tokenize(list(attack_texts), tokenizer, max_length=max_length, min_length=2)
    if not sequences:
        raise RNAError("no relearning text has 2 or more tokens", where="--attack-texts", fix="pass longer texts")
    corpus = Corpus(name="relearn", sequences=sequences, pad_id=int(tokenizer.pad_token_id))
    attacked = copy.deepcopy(model).eval()
    params = _trainable(attacked, lora_rank, seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(attacked.parameters()).device
    curve = []
    for step in range(max(steps) + 1):
        if step in steps:
            curve.append({"step": step, **summary(attacked, tokenizer, corpora, max_length=max_length)})
            log.info("relearn lr %g: step %d forget nll %.3f", lr, step, curve[-1]["forget"]["nll"]["mean"]
                     if "forget" in curve[-1] else float("nan"))
        if step == max(steps):
            break
        idx = batch_indices(len(corpus), min(batch_size, len(corpus)), step, seed=seed, stream=stream_id("relearn"),
                            shuffle=True)
        batch = {k: v.to(device) for k, v in corpus.batch(idx).items()}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = attacked(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return curve


def run(model: Any, tokenizer: Any, attack_texts: Sequence[str], corpora: dict[str, Sequence[str]], *,
        steps: Sequence[int] = (0, 5, 10, 20), lrs: Sequence[float] = (1e-5, 3e-5), **kwargs: Any) -> dict[str, Any]:
    """One recovery curve per learning rate: ``{"lr=1e-05": [...], ...}``."""
    return {f"lr={lr:g}": relearn_curve(model, tokenizer, attack_texts, corpora, steps=sorted(set(steps)), lr=lr,
                                        **kwargs) for lr in lrs}
