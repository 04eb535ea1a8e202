"""GCG attack (greedy coordinate gradient, Zou et al. 2023) on held-out forget text.

One adversarial token string is optimised over a few forget prompts: each forget text is cut into
a prompt (its first ``prompt_tokens`` tokens) and a target (the next ``target_tokens``), the string
sits between them, and the loss is the mean NLL of the targets. It is then transferred to held-out
forget texts cut the same way: the targets' NLL and top-1 with the optimised string, with a random
string of the same length (the control: any inserted tokens disturb a model) and with none. If
unlearning only hid the knowledge, the optimised string brings the target NLL back toward the base
model's.

Why our own loop and not ``nanogcg``: nanogcg 0.3 requires ``transformers<=4.47.1`` (installing it
downgrades our 5.x stack), its prefix cache fails on transformers 5 (``'DynamicCache' object is
not subscriptable``), it optimises one prompt/target pair while the transfer protocol needs one
string over several prompts, and it switches torch to deterministic algorithms process-wide. The
loop below is the published algorithm: token gradients of a one-hot relaxation, the ``topk`` best
substitutions per position, ``search_width`` single-token candidates evaluated exactly, the best
kept. Insertion is in token space (the string's ids are inserted as they are), so what is
evaluated is exactly what was optimised.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rna_theory.errors import RNAError
from rna_train.progress import bar

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GCGSpec:
    """Attack budget and cut of the texts. The defaults fit SmolLM2-135M on 2 CPU cores (~3 min);
    :data:`GPU_SPEC` is the larger published-scale setting."""

    steps: int = 20
    n_tokens: int = 8
    search_width: int = 32
    topk: int = 64
    train_prompts: int = 4
    prompt_tokens: int = 8
    target_tokens: int = 16
    heldout: int = 32
    batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        """Every count positive (a clear error naming the field otherwise)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "seed" and (not isinstance(value, int) or value < 1):
                raise RNAError(f"gcg.{f.name} must be a positive integer, got {value!r}", where=f"gcg.{f.name}",
                               fix="use an integer >= 1")


#: The setting we document for a GPU (about the published GCG budget, several prompts).
GPU_SPEC = GCGSpec(steps=250, n_tokens=20, search_width=512, topk=256, train_prompts=16, heldout=128,
                   batch_size=512)


def preset_spec(preset: str, **values: int) -> GCGSpec:
    """The ``cpu`` (defaults) or ``gpu`` (:data:`GPU_SPEC`) budget with ``values`` replaced, checked."""
    spec = dataclasses.replace(GPU_SPEC if preset == "gpu" else GCGSpec(), **values)
    spec.check()
    return spec


def cut_texts(tokenizer: Any, texts: Sequence[str], spec: GCGSpec, limit: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids) of the first ``limit`` texts long enough for both."""
    need = spec.prompt_tokens + spec.target_tokens
    items = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])
        if len(ids) >= need:
            items.append((ids[:spec.prompt_tokens], ids[spec.prompt_tokens:need]))
            if len(items) == limit:
                break
    return items


def allowed_tokens(tokenizer: Any, vocab: int) -> torch.Tensor:
    """Ids the string may use: printable ASCII, not blank, not special, below ``vocab``."""
    n = min(len(tokenizer), vocab)
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    ok = [i for i, t in enumerate(texts) if i not in special and t.strip() and t.isascii() and t.isprintable()]
    if not ok:
        raise RNAError("the tokenizer has no printable ASCII tokens", where="gcg", fix="use a text tokenizer")
    return torch.tensor(ok, dtype=torch.long)


def _target_scores(model: Any, ids: torch.Tensor, n_target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: mean NLL and top-1 of its last ``n_target`` tokens."""
    logits = model(input_ids=ids, logits_to_keep=n_target + 1).logits[:, :-1].float()
    targets = ids[:, -n_target:]
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, targets[..., None])[..., 0]
    return nll.mean(-1), (logits.argmax(-1) == targets).float().mean(-1)


def _rows(items: Sequence[tuple[list[int], list[int]]], middles: torch.Tensor) -> torch.Tensor:
    """Every (middle, item) sequence prompt + middle + target: (len(middles) * len(items), L)."""
    prompts = torch.tensor([p for p, _ in items], dtype=torch.long)
    targets = torch.tensor([t for _, t in items], dtype=torch.long)
    w, k = middles.shape[0], len(items)
    return torch.cat([prompts.repeat(w, 1), middles.repeat_interleave(k, 0), targets.repeat(w, 1)], dim=1)


@torch.no_grad()
def score_rows(model: Any, rows: torch.Tensor, n_target: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Target NLL and top-1 of every row, ``batch_size`` rows per forward pass."""
    device = next(model.parameters()).device
    nll, top1 = [], []
    for start in range(0, rows.shape[0], batch_size):
        a, b = _target_scores(model, rows[start:start + batch_size].to(device), n_target)
        nll.append(a.cpu())
        top1.append(b.cpu())
    return torch.cat(nll).numpy(), torch.cat(top1).numpy()


def _gradient(model: Any, items: Sequence[tuple[list[int], list[int]]], current: torch.Tensor,
              vocab: int) -> torch.Tensor:
    """d(mean target NLL) / d(one-hot of each string position): (n_tokens, vocab)."""
    from rna_train.arch import embed_onehot

    device = next(model.parameters()).device
    onehot = torch.nn.functional.one_hot(current.to(device), vocab).float().requires_grad_(True)
    embed = model.get_input_embeddings()
    prompts = torch.tensor([p for p, _ in items], dtype=torch.long, device=device)
    targets = torch.tensor([t for _, t in items], dtype=torch.long, device=device)
    middle = embed_onehot(model, onehot)[None].expand(len(items), -1, -1)
    embeds = torch.cat([embed(prompts), middle, embed(targets)], dim=1)
    logits = model(inputs_embeds=embeds, logits_to_keep=targets.shape[1] + 1).logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    return onehot.grad.detach().cpu()


def _candidates(grad: torch.Tensor, current: torch.Tensor, allowed: torch.Tensor, spec: GCGSpec,
                gen: torch.Generator) -> torch.Tensor:
    """``search_width`` copies of ``current``, each with one position set to one of that position's
    ``topk`` most loss-decreasing allowed tokens (position and token drawn at random)."""
    scores = torch.full_like(grad, float("inf"))
    scores[:, allowed] = grad[:, allowed]
    top = (-scores).topk(min(spec.topk, allowed.numel()), dim=1).indices
    pos = torch.randint(0, current.numel(), (spec.search_width,), generator=gen)
    pick = torch.randint(0, top.shape[1], (spec.search_width,), generator=gen)
    out = current.repeat(spec.search_width, 1)
    out[torch.arange(spec.search_width), pos] = top[pos, pick]
    return out


def optimise(model: Any, tokenizer: Any, items: Sequence[tuple[list[int], list[int]]], spec: GCGSpec,
             allowed: torch.Tensor | None = None) -> dict[str, Any]:
    """Run GCG on ``items``: the best string found (ids and text) and the loss after each step.
    ``allowed``: :func:`allowed_tokens` when the caller already has it (decoding a vocabulary is slow)."""
    vocab = model.get_input_embeddings().weight.shape[0]
    allowed = allowed_tokens(tokenizer, vocab) if allowed is None else allowed
    gen = torch.Generator().manual_seed(spec.seed)
    current = allowed[torch.randint(0, allowed.numel(), (spec.n_tokens,), generator=gen)]
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        best_loss = initial = float(score_rows(model, _rows(items, current[None]), spec.target_tokens,
                                               spec.batch_size)[0].mean())
        best, losses = current.clone(), []
        for _ in bar(range(spec.steps), desc="gcg", unit="step", leave=False):
            cands = _candidates(_gradient(model, items, current, vocab), current, allowed, spec, gen)
            nll, _ = score_rows(model, _rows(items, cands), spec.target_tokens, spec.batch_size)
            per_cand = nll.reshape(cands.shape[0], len(items)).mean(1)
            i = int(per_cand.argmin())
            current = cands[i]
            losses.append(float(per_cand[i]))
            if losses[-1] < best_loss:
                best_loss, best = losses[-1], current.clone()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return {"ids": best.tolist(), "string": tokenizer.decode(best.tolist()), "initial_loss": initial,
            "best_loss": best_loss, "losses": losses}


def transfer(model: Any, items: Sequence[tuple[list[int], list[int]]], ids: Sequence[int], spec: GCGSpec,
             random_ids: Sequence[int]) -> dict[str, dict[str, np.ndarray]]:
    """Per held-out item: target NLL and top-1 with no string (``clean``), the optimised string
    (``attack``) and a random string of the same length (``random``)."""
    out = {}
    for name, middle in (("clean", []), ("attack", list(ids)), ("random", list(random_ids))):
        rows = _rows(items, torch.tensor([middle], dtype=torch.long).reshape(1, len(middle)))
        nll, top1 = score_rows(model, rows, spec.target_tokens, spec.batch_size)
        out[name] = {"nll": nll, "top1": top1}
    return out


def run(model: Any, tokenizer: Any, attack_texts: Sequence[str], heldout_texts: Sequence[str], spec: GCGSpec, *,
        base: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Optimise on ``attack_texts``, transfer to ``heldout_texts``; intervals over held-out texts."""
    from rna_train.attacks.textnll import interval

    spec.check()
    if base is not None and base[1].get_vocab() != tokenizer.get_vocab():
        raise RNAError("the base model's tokenizer differs from the attacked model's", where="--base",
                       fix="pass the base model the attacked one was unlearned from")
    train = cut_texts(tokenizer, attack_texts, spec, spec.train_prompts)
    heldout = cut_texts(tokenizer, heldout_texts, spec, spec.heldout)
    for name, got, where in (("optimisation", train, "attack texts"), ("held-out", heldout, "forget texts")):
        if len(got) < 2:
            raise RNAError(f"fewer than 2 {where} have {spec.prompt_tokens + spec.target_tokens} tokens "
                           f"for the GCG {name} set", where=where,
                           fix="pass more or longer texts, or lower gcg.prompt_tokens / gcg.target_tokens")
    start = time.perf_counter()
    allowed = allowed_tokens(tokenizer, model.get_input_embeddings().weight.shape[0])
    found = optimise(model, tokenizer, train, spec, allowed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    random_ids = allowed[torch.randint(0, allowed.numel(), (spec.n_tokens,), generator=gen)].tolist()
    scores = transfer(model, heldout, found["ids"], spec, random_ids)
    result: dict[str, Any] = {"spec": dataclasses.asdict(spec), "found": found, "random_ids": random_ids,
                              "n_train": len(train), "n_heldout": len(heldout), "heldout": {}}
    for key in ("nll", "top1"):
        clean = scores["clean"][key]
        result["heldout"][key] = {
            "clean": interval(clean), "attack": interval(scores["attack"][key]),
            "random": interval(scores["random"][key]),
            "attack_minus_clean": interval(scores["attack"][key] - clean),
            "attack_minus_random": interval(scores["attack"][key] - scores["random"][key])}
    if base is not None:
        base_scores = transfer(base[0], heldout, [], spec, [])["clean"]
        result["base"] = {k: interval(v) for k, v in base_scores.items()}
    result["seconds"] = time.perf_counter() - start
    log.info("gcg: held-out target NLL %.3f clean, %.3f attacked, %.3f random string",
             result["heldout"]["nll"]["clean"]["mean"], result["heldout"]["nll"]["attack"]["mean"],
             result["heldout"]["nll"]["random"]["mean"])
    return result
