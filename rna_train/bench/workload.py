"""One benchmark measurement, run in a fresh process: a few unlearning steps or one scoring pass.

Two executions of the same losses on the same synthetic batches:

* ``trainer``: this project's step (:class:`rna_train.step.TrainStep`, the trainer's own step function, +
  ``Method.loss``): for RMU / Adaptive RMU / RSV only the embeddings and layers ``0..l`` exist
  (what the trainer loads from a checkpoint), the reference is the live model with the 3 original
  matrices swapped in, a timed reference pass before step 1 caches what the steps read from the
  reference (:mod:`rna_train.refcache`; the trainer's ``train.reference_cache``), forwards stop
  after layer ``l``;
* ``reference``: the reference code's execution: the full model plus a deep-copied frozen model,
  every forward through all layers and the output head, layer outputs read by forward hooks
  (only the trained matrices require gradients, which favours it).

Memory is the peak over the whole process (weights, optimizer, activations): CUDA
``max_memory_allocated``, or on CPU the peak RSS (the caller subtracts an idle process's RSS).
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import statistics
import time
import zlib
from typing import Any

import torch
from torch import nn

from rna_theory.noise import NoiseSchedule
from rna_train import arch, losses
from rna_train.config import TopicConfig
from rna_train.methods import get_method
from rna_train.methods.base import Setup
from rna_train.models import edit_layer_output, original_values, select_trainable
from rna_train.refcache import ReferenceCache
from rna_train.rna import RNA
from rna_train.step import TrainStep

#: Method name -> (registry name, retain loss). ``npo_kl`` and ``simnpo_kl`` are the paper's PO recipes.
METHODS: dict[str, tuple[str, str]] = {
    "rmu": ("rmu", "rm"), "adaptive_rmu": ("adaptive_rmu", "rm"), "rsv": ("rsv", "rm"),
    "npo_kl": ("npo", "kl"), "simnpo_kl": ("simnpo", "kl"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_memory(device: str) -> int:
    """Peak bytes of this process: CUDA allocations, or resident set size on CPU."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def build_model(shape: dict[str, Any], layers: int | None, dtype: str, device: str, seed: int = 0) -> nn.Module:
    """A randomly initialised Llama-architecture model (``layers`` overrides the depth)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**{**shape, **({"num_hidden_layers": layers} if layers else {})})
    config.use_cache = False
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    # Every matrix drawn from a generator seeded by its name, so a truncated model holds exactly the
    # lower layers of the full one (both executions then train the same weights); norms stay ones.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                param.normal_(0.0, config.initializer_range, generator=gen)
    model.eval()
    return model


def _batches(vocab: int, batch: int, seq: int, count: int, seed: int, device: str) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        ids = torch.randint(4, vocab, (batch, seq), generator=gen)
        out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                    "index": torch.arange(i * batch, (i + 1) * batch)})
    return out


def _hooked_hidden(model: nn.Module, layer: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference code's read of layer ``layer``: a forward hook and a full forward."""
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        store.append(out[0] if isinstance(out, tuple) else out)

    handle = arch.decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.remove()
    return store[0]


def _noise(hidden: torch.Tensor, nu: float, gen: torch.Generator) -> torch.Tensor:
    return hidden + nu * torch.randn(hidden.shape, generator=gen, device=hidden.device, dtype=hidden.dtype)


def reference_loss(kind: str, updated: nn.Module, frozen: nn.Module, forget: dict[str, torch.Tensor],
                   retain: dict[str, torch.Tensor], *, layer: int, direction: torch.Tensor, nu: float,
                   gen: torch.Generator) -> torch.Tensor:
    """The loss the reference code computes, with its data flow (full forwards, two models)."""
    mask_f, mask_r = forget["attention_mask"], retain["attention_mask"]
    if kind in ("rmu", "adaptive_rmu", "rsv"):
        h_f = _hooked_hidden(updated, layer, forget)
        with torch.no_grad():
            if kind == "rmu":
                target = 6.5 * direction
            else:
                frozen_f = _hooked_hidden(frozen, layer, forget)
                target = (frozen_f + 10.0 * direction if kind == "rsv"
                          else 5.0 * losses.mean_token_norm(frozen_f, mask_f) * direction)
        forget_loss = losses.masked_mse(h_f, target.to(h_f.dtype).expand_as(h_f), mask_f)
        h_r = _hooked_hidden(updated, layer, retain)
        with torch.no_grad():
            t_r = _hooked_hidden(frozen, layer, retain)
            if nu:
                t_r = _noise(t_r, nu, gen)
        return forget_loss + 1200.0 * losses.masked_mse(h_r, t_r, mask_r)
    logits_f = updated(input_ids=forget["input_ids"], attention_mask=mask_f).logits
    nll, count = losses.sequence_nll(logits_f, forget["input_ids"], mask_f)
    if kind == "npo_kl":
        with torch.no_grad():
            ref_nll, _ = losses.sequence_nll(frozen(input_ids=forget["input_ids"], attention_mask=mask_f).logits,
                                             forget["input_ids"], mask_f)
        forget_loss = losses.npo_loss(nll, ref_nll, 0.1)
    else:
        forget_loss = losses.simnpo_loss(nll, count, 0.1, 0.0)
    with torch.no_grad():
        if nu:
            with edit_layer_output(frozen, layer, lambda h: _noise(h, nu, gen)):
                ref_r = frozen(input_ids=retain["input_ids"], attention_mask=mask_r).logits
        else:
            ref_r = frozen(input_ids=retain["input_ids"], attention_mask=mask_r).logits
    logits_r = updated(input_ids=retain["input_ids"], attention_mask=mask_r).logits
    return forget_loss + 50.0 * losses.kl_ref_theta(logits_r, ref_r, mask_r)


def train_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["steps"]`` measured steps (after one warm-up) and return times and peak memory.

    ``spec``: ``impl`` (trainer | reference), ``method`` (a key of :data:`METHODS`), ``shape``
    (LlamaConfig keys), ``layer``, ``batch``, ``seq``, ``steps``, ``dtype``, ``device``, ``nu``
    (RNA target-noise std; 0 = off); ``all_weights`` (train every parameter instead of the three
    ``down_proj`` matrices); trainer only: ``lora`` (adapter rank, 0 = full matrices) and
    ``checkpointing`` (gradient checkpointing).
    """
    device, layer, nu = spec["device"], spec["layer"], float(spec["nu"])
    name, retain = METHODS[spec["method"]]
    shape = spec["shape"]
    steps = int(spec["steps"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    representation = retain == "rm"
    trainable_layers = [layer - 2, layer - 1, layer]
    build_start = time.perf_counter()
    truncate = spec["impl"] == "trainer" and representation
    model = build_model(shape, layer + 1 if truncate else None, spec["dtype"], device)
    if truncate:
        from rna_train.truncated import drop_output_head

        drop_output_head(model)
    names = select_trainable(model, trainable_layers)
    if spec.get("all_weights"):  # full fine-tuning: every parameter trained (the usual PO setup)
        names = [n for n, _ in model.named_parameters()]
        for p in model.parameters():
            p.requires_grad_(True)
    if spec.get("lora"):  # rank-r adapters on the same matrices (the trainer's model.lora)
        from rna_train.lora import inject

        names = inject(model, names, rank=int(spec["lora"]), alpha=None, dropout=0.0, seed=0)
    if spec.get("checkpointing"):  # the trainer's train.gradient_checkpointing
        from rna_train.models import enable_checkpointing

        enable_checkpointing(model, dropout=False)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=1e-5)
    topics = [TopicConfig(name="bench", path="-")]
    method_cls = get_method(name)
    options = method_cls.Options(layer=layer, retain_loss=retain)
    method = method_cls(options, Setup(hidden_size=shape["hidden_size"], topics=topics, seed=0, tokenizer=None))
    rna_mode = spec.get("rna_mode", "target")
    rna = RNA(mode=rna_mode if nu else "off", layer=layer,
              schedule=NoiseSchedule(nu=nu) if nu else None, seed=0)
    frozen = None
    originals = None
    if spec["impl"] == "reference":
        frozen = copy.deepcopy(model)
        for p in frozen.parameters():
            p.requires_grad_(False)
    else:
        originals = original_values(model, names)
    build_s = time.perf_counter() - build_start
    vocab = shape["vocab_size"]
    forget = _batches(vocab, spec["batch"], spec["seq"], steps + 1, 1, device)
    retain_b = _batches(vocab, spec["batch"], spec["seq"], steps + 1, 2, device)
    direction = method.directions[0].to(device) if hasattr(method, "directions") else None
    gen = torch.Generator(device=device).manual_seed(0)
    cache, prefill_s = None, 0.0
    shared = min(trainable_layers)
    chunk_bytes = int(float(spec.get("head_chunk_mib", 8.0)) * 2**20)  # the trainer's train.head_chunk_mib
    stepper = TrainStep(method, model, rna, originals=originals, shared_layers=shared, head_chunk_bytes=chunk_bytes)
    if spec["impl"] == "trainer" and spec.get("cache", True):
        def reference_pass(store: ReferenceCache, count: int) -> None:
            dataclasses.replace(stepper, cache=store).prefill([(0, b) for b in forget[:count]], retain_b[:count])

        reference_pass(ReferenceCache(budget_bytes=2**40), 1)  # warm-up (kernels, allocator), not timed
        cache = stepper.cache = ReferenceCache(budget_bytes=2**40)  # host memory, as in the trainer
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        reference_pass(cache, len(forget))
        if device == "cuda":
            torch.cuda.synchronize()
        prefill_s = time.perf_counter() - start
    times = []
    for step in range(steps + 1):
        f, r = forget[step], retain_b[step]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if spec["impl"] == "reference":
            assert frozen is not None
            loss = reference_loss(spec["method"], model, frozen, f, r, layer=layer, direction=direction,
                                  nu=nu, gen=gen)
        else:
            loss = torch.tensor(stepper(step, 0, [f], [r])["loss"])  # the trainer's step, backward included
        if loss.requires_grad:
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
        else:
            first_loss = float(loss.detach())  # same weights and batch in both executions
    flops = None
    if spec.get("count_flops"):
        from torch.utils.flop_counter import FlopCounterMode

        f, r = forget[0], retain_b[0]
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                if spec["impl"] == "reference":
                    loss = reference_loss(spec["method"], model, frozen, f, r, layer=layer, direction=direction,
                                          nu=nu, gen=gen)
                else:
                    # full logits here: the flop counter's module tracker cannot follow the chunked
                    # losses' inner autograd.grad, and the executed FLOPs are the same
                    loss = torch.tensor(dataclasses.replace(stepper, head_chunk_bytes=0)(0, 0, [f], [r])["loss"])
                if loss.requires_grad:
                    loss.backward()
            flops = counter.get_total_flops()
        except AssertionError:  # older torch cannot count grouped-query SDPA: FLOPs derived offline
            flops = None
        optimizer.zero_grad(set_to_none=True)
    tokens = spec["batch"] * spec["seq"] * 2  # forget + retain tokens per step
    n_params = sum(p.numel() for p in model.parameters())
    return {"step_s": statistics.median(times), "step_times": times, "tokens_per_s": tokens / statistics.median(times),
            "peak_bytes": peak_memory(device), "build_s": build_s, "params": n_params, "flops": flops,
            "loss": float(loss.detach()), "first_loss": first_loss, "prefill_s": prefill_s,
            "prefill_per_step_s": prefill_s / (steps + 1),
            "cache_gib": cache.state_bytes / 2**30 if cache is not None else 0.0}


def eval_pass(spec: dict[str, Any]) -> dict[str, Any]:
    """Score synthetic multiple-choice questions with and without the shared-prefix scorer.

    ``spec``: ``shape``, ``questions``, ``context_words``, ``dtype``, ``device``, ``tokenizer``
    (folder), ``repeats``. Both scorers run ``repeats`` times alternately; returns their median
    times, the largest score difference and whether every prediction agrees.
    """
    import random

    from transformers import AutoTokenizer

    from rna_train.eval.probes import Question
    from rna_train.eval.scoring import score_questions

    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = build_model(spec["shape"], None, spec["dtype"], spec["device"])
    words = [w for w in tok.get_vocab() if w.isalpha()]
    rng = random.Random(0)
    questions = []
    for i in range(spec["questions"]):
        n = spec["context_words"] + rng.randint(-5, 5)
        choices = tuple(" ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) for _ in range(4))
        questions.append(Question(" ".join(rng.choice(words) for _ in range(n)), choices, 0, f"q{i}"))
    timings: dict[str, list[float]] = {"shared": [], "per_choice": []}
    results = {}
    for _ in range(spec["repeats"]):
        for key in ("per_choice", "shared"):
            start = time.perf_counter()
            results[key] = score_questions(model, tok, questions, ["loglik"], batch_size=8,
                                           shared_prefix=key == "shared")
            timings[key].append(time.perf_counter() - start)
    diff = max(abs(a - b) for qa, qb in zip(results["shared"], results["per_choice"], strict=True)
               for a, b in zip(qa.scores["loglik"], qb.scores["loglik"], strict=True))
    same = all(qa.prediction("loglik") == qb.prediction("loglik")
               for qa, qb in zip(results["shared"], results["per_choice"], strict=True))
    return {"shared_s": statistics.median(timings["shared"]), "per_choice_s": statistics.median(timings["per_choice"]),
            "timings": timings, "max_abs_diff": diff, "same_predictions": same,
            "questions": spec["questions"], "choices": 4 * spec["questions"]}


def idle(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a process that imported torch, transformers and the trainer and did nothing."""
    import transformers  # noqa: F401  (imported for its memory, as every worker does)

    return {"peak_bytes": peak_memory("cpu")}
