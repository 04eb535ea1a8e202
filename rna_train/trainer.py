"""The unlearning loop on ``accelerate``: one code path for CPU, one GPU, DDP, FSDP and DeepSpeed.

Everything that can be wrong with a run (config, data, model layout, layers, RNA settings) is
checked in :func:`prepare` before the output folder is created; the folder gets a ``DONE`` marker
only after the final model is saved. Each optimizer step sees a *global* batch chosen by
:func:`rna_train.data.batch_indices` and split over processes and accumulation micro-steps, and
all randomness is seeded from ``(seed, step, process)``: a resumed run and an N-process run
reproduce an uninterrupted single-process run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rna_theory.errors import RNAError
from rna_train import arch, checkpoint, config, lora, sharded, tracking
from rna_train.data import Corpus, batch_indices, load_corpus, stream_id
from rna_train.methods import Method, MethodOptions, get_method
from rna_train.methods.base import Setup
from rna_train.models import (
    enable_checkpointing,
    evaluating,
    frozen_copy,
    load_model,
    load_tokenizer,
    original_values,
    select_trainable,
)
from rna_train.refcache import ReferenceCache, length_sorted_chunks
from rna_train.rna import RNA, step_seed
from rna_train.step import Counts, TrainStep
from rna_train.truncated import can_truncate, save_patched

log = logging.getLogger(__name__)

DONE = "DONE"


@dataclasses.dataclass
class Prepared:
    """Everything a run needs, validated, before anything is written or trained."""

    cfg: config.RunConfig
    method: Method
    model: nn.Module
    tokenizer: Any
    reference: nn.Module | None
    forget: list[Corpus]
    retain: Corpus | None
    trainable: list[str]
    rna: RNA
    #: Original values of the trainable parameters when the reference shares the model's weights.
    originals: dict[str, torch.Tensor] | None = None
    #: Checkpoint folder the model was loaded from, truncated to the layers the losses read; the
    #: final model is this checkpoint with the trained tensors replaced.
    source_checkpoint: Path | None = None


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model and the per-step metrics."""

    model: nn.Module
    reference: nn.Module | None
    trainable: list[str]
    metrics: list[dict[str, Any]]
    output_dir: Path
    tokenizer: Any = None


def _load_data(cfg: config.RunConfig, tokenizer: Any,
               needs_retain: bool) -> tuple[list[Corpus], Corpus | None]:
    d = cfg.data
    common = {"min_length": d.min_length, "truncation_side": d.truncation_side}
    forget = [load_corpus(t.name, t.path, tokenizer, text_field=t.text_field, fmt=t.format, split=t.split,
                          subset=t.subset, streaming=t.streaming, limit=t.limit, where=f"data.forget.{i}",
                          max_length=t.max_length or d.max_length, **common)
              for i, t in enumerate(d.forget)]
    retain = None
    if needs_retain:
        r = d.retain
        retain = load_corpus(r.name, r.path, tokenizer, text_field=r.text_field, fmt=r.format, split=r.split,
                             subset=r.subset, streaming=r.streaming, limit=r.limit, where="data.retain",
                             max_length=d.max_length, **common)
    return forget, retain


def prepare(cfg: config.RunConfig, options: MethodOptions, *, rank: int = 0,
            model_and_tokenizer: tuple[nn.Module, Any] | None = None, shared_reference: bool = False,
            load_truncated: bool | None = None) -> Prepared:
    """Load and validate everything for a run; raises :class:`RNAError` on any bad input.

    ``model_and_tokenizer`` replaces loading from ``cfg.model`` (tests, notebooks). With
    ``shared_reference`` the frozen reference is the model itself with the original values of the
    trainable parameters swapped in (``Prepared.originals``) instead of a deep copy (one process
    and DDP); sharded engines (FSDP, DeepSpeed), which own the parameters, need the copy.
    ``load_truncated`` (default: ``shared_reference``) lets RM methods load only the layers their
    losses read (one process).
    """
    method_cls = get_method(cfg.method["name"])
    m = cfg.model
    # Cheap checks first (tokenizer, data): a 7B model takes minutes to load.
    if model_and_tokenizer is None:
        source = m.tokenizer or m.name_or_path
        if source is None:
            raise RNAError("no tokenizer given", where="model.tokenizer",
                           fix="set model.tokenizer to a tokenizer folder when using model.from_config")
        tokenizer = load_tokenizer(source, trust_remote_code=m.trust_remote_code, revision=m.revision,
                                   gguf_file=m.gguf_file if m.tokenizer is None else None)
    else:
        tokenizer = model_and_tokenizer[1]
    forget, retain = _load_data(cfg, tokenizer, method_cls.uses_retain(options))
    rna = RNA(mode=cfg.rna.mode, layer=cfg.rna.layer if cfg.rna.layer is not None else options.layer,
              seed=cfg.seed, rank=rank)
    if cfg.rna.mode != "off":
        rna = dataclasses.replace(rna, schedule=cfg.rna.noise.with_total_steps(cfg.train.steps))
    keep = None
    truncated = shared_reference if load_truncated is None else load_truncated
    if truncated and model_and_tokenizer is None and can_truncate(m.name_or_path, m.gguf_file):
        top = method_cls.top_layer(options)
        layers = m.trainable.layers
        if (top is not None and (layers is None or max(layers, default=0) <= top)
                and (cfg.rna.layer is None or cfg.rna.layer <= top)):
            keep = top + 1
            log.info("loading only the embeddings and layers 0..%d of %s (no loss reads higher layers)",
                     top, m.name_or_path)
    if model_and_tokenizer is None:
        model, tokenizer = load_model(m.name_or_path, from_config=m.from_config, tokenizer=m.tokenizer,
                                      gguf_file=m.gguf_file, dtype=m.dtype,
                                      trust_remote_code=m.trust_remote_code, revision=m.revision,
                                      seed=cfg.seed, attn_implementation=m.attn_implementation,
                                      keep_layers=keep)
    else:
        model = model_and_tokenizer[0]
    arch.check_layer(model, options.layer, "method.layer")
    hidden_size = int(model.config.get_text_config().hidden_size)  # multimodal wrappers nest it
    method = method_cls(options, Setup(hidden_size=hidden_size, topics=cfg.data.forget, seed=cfg.seed,
                                       tokenizer=tokenizer))
    layers = cfg.model.trainable.layers if cfg.model.trainable.layers is not None else method.default_layers()
    trainable = select_trainable(model, layers, cfg.model.trainable.patterns)
    if m.lora.rank:
        trainable = lora.inject(model, trainable, rank=m.lora.rank, alpha=m.lora.alpha, dropout=m.lora.dropout,
                                seed=cfg.seed)
    method.validate(model, rna)
    reference, originals = None, None
    if method.needs_reference():
        if shared_reference:
            originals = original_values(model, trainable)
        else:
            reference = frozen_copy(model)
    return Prepared(cfg=cfg, method=method, model=model, tokenizer=tokenizer, reference=reference,
                    forget=forget, retain=retain, trainable=trainable, rna=rna, originals=originals,
                    source_checkpoint=Path(m.name_or_path) if keep is not None and m.name_or_path else None)


#: Settings a resumed run may change: they do not affect the trained weights.
RESUMABLE_CHANGES = {"train.progress", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.save_model", "train.snapshot_steps", "train.gradient_checkpointing",
                     "train.tracker"}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _check_output_dir(out: Path, resume: bool, cfg: config.RunConfig) -> None:
    if (out / DONE).exists():
        raise RNAError("this run already finished", where=str(out),
                       fix="choose another output_dir (or delete the folder to rerun)")
    if out.exists() and any(out.iterdir()) and not resume:
        raise RNAError("output folder exists and is not empty", where=str(out),
                       fix="pass --resume to continue it, or choose another output_dir")
    saved = out / "config.yaml"
    if resume and saved.exists():
        old = _flatten(config.yaml_load(saved.read_text()))
        new = _flatten(config.to_dict(cfg))
        changed = sorted(k for k in old.keys() | new.keys()
                         if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            raise RNAError(f"--resume with a different config: {', '.join(changed)}", where=str(saved),
                           fix="resume with the settings the run was started with")


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def environment(accelerator: Any) -> dict[str, Any]:
    """Versions, device and git commit recorded next to a run's outputs."""
    import accelerate
    import transformers

    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "device": str(accelerator.device),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision, "git_commit": _git_commit(), "argv": sys.argv,
    }


def _scheduler(optimizer: torch.optim.Optimizer, t: config.TrainConfig) -> Any:
    """``train.lr_schedule`` with ``train.warmup_steps`` over ``train.steps`` (``transformers.get_scheduler``)."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if t.lr_schedule == "constant" and t.warmup_steps else t.lr_schedule
    return get_scheduler(name, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.steps)


def _micro_batches(indices: list[int], rank: int, processes: int, accum: int) -> list[list[int]]:
    per_process = len(indices) // processes
    mine = indices[rank * per_process:(rank + 1) * per_process]
    size = per_process // accum
    return [mine[i * size:(i + 1) * size] for i in range(accum)]


def _counts(corpus: Corpus, indices: list[int], parts: int) -> Counts:
    """Token and next-token-pair counts of a global batch, per micro-batch on average."""
    lengths = [len(corpus.sequences[i]) for i in indices]
    return Counts(tokens=sum(lengths) / parts, pairs=sum(n - 1 for n in lengths) / parts)


def _batch(corpus: Corpus, indices: list[int]) -> dict[str, torch.Tensor]:
    out = corpus.batch(indices)
    out["index"] = torch.tensor(indices, dtype=torch.long)
    return out


@contextlib.contextmanager
def _out_of_memory_advice(cfg: config.RunConfig, step: int, where: str | None = None) -> Iterator[None]:
    """Turn an out-of-memory error in a training step into advice naming the settings to lower."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        t = cfg.train
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise RNAError(
            f"out of memory {where or f'at step {step + 1}'} ({detail})",
            where="train",
            fix=f"lower train.batch_size (now {t.batch_size}) or raise train.grad_accum (now {t.grad_accum}), "
                f"lower data.max_length (now {cfg.data.max_length}), use model.dtype=bf16 or "
                f"train.mixed_precision=bf16, or move method.layer down (RM methods load only layers <= l); "
                f"host memory: lower train.reference_cache_gib (now {t.reference_cache_gib}); "
                "resume with --resume") from exc


def _nonfinite(terms: dict[str, float], trainable: dict[str, nn.Parameter], accelerator: Any) -> str | None:
    """Name of the first non-finite loss term, or of a parameter with a non-finite gradient.

    The flag is reduced over processes (max), so every process takes the same decision.
    """
    bad_term = next((k for k in sorted(terms) if not math.isfinite(terms[k])), None)
    bad_grad = next((n for n, p in trainable.items()
                     if p.grad is not None and not bool(torch.isfinite(p.grad).all())), None)
    flag = torch.tensor([0.0 if bad_term is None and bad_grad is None else 1.0], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum")) == 0.0:
        return None
    if bad_term is not None:
        return f"loss term {bad_term!r} ({terms[bad_term]})"
    if bad_grad is not None:
        return f"gradient of {bad_grad} (every loss term finite: {terms})"
    return "loss or gradient on another process"


def _is_fsdp2(accelerator: Any) -> bool:
    """Whether accelerate runs FSDP2 (``fully_shard``: parameters sharded as DTensors)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    return accelerator.distributed_type.name == "FSDP" and getattr(plugin, "fsdp_version", 1) == 2


def _check_distributed(cfg: config.RunConfig, accelerator: Any, resume: bool) -> None:
    """Settings the distributed setup cannot honour, refused before anything is loaded."""
    from accelerate.utils import DistributedType

    t = cfg.train
    procs = accelerator.num_processes
    if t.batch_size % (procs * t.grad_accum):
        raise RNAError(f"batch_size {t.batch_size} is not divisible by processes x grad_accum "
                       f"= {procs} x {t.grad_accum}", where="train.batch_size",
                       fix="make the global batch a multiple of num_processes * grad_accum")
    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        gathered = _is_fsdp2(accelerator)
        if cfg.model.lora.rank and not gathered:
            raise RNAError(f"LoRA is not supported under {kind.name}{' (v1)' if kind == DistributedType.FSDP else ''} "
                           "(flattened sharded parameters)",
                           where="model.lora.rank",
                           fix="use FSDP2 (fsdp_version: 2), DDP or one process with LoRA, or set model.lora.rank=0")
        if (t.checkpoint_every or resume) and not gathered:
            raise RNAError(f"periodic checkpoints and --resume are not supported under {kind} (v1) yet "
                           "(flattened sharded parameters)", where="train.checkpoint_every",
                           fix="set train.checkpoint_every=0 and run without --resume, or use DDP or FSDP2")
        if t.snapshot_steps and not gathered:
            raise RNAError(f"snapshots are not supported under {kind} (v1) yet (parameters are sharded)",
                           where="train.snapshot_steps", fix="set train.snapshot_steps=[] or use DDP or FSDP2")
    if kind == DistributedType.DEEPSPEED and t.grad_accum != 1:
        raise RNAError("grad_accum > 1 under DeepSpeed is configured in the DeepSpeed config",
                       where="train.grad_accum", fix="set train.grad_accum=1 and gradient_accumulation_steps there")


@dataclasses.dataclass
class _Run:
    """A started run: the prepared inputs, the distributed wrappers, the optimizer and the step."""

    cfg: config.RunConfig
    prep: Prepared
    accelerator: Any
    wrapped: nn.Module
    model: nn.Module
    optimizer: Any
    step: TrainStep
    out: Path
    #: The trainable parameters by name (looked up once, read at every step).
    params: dict[str, nn.Parameter]
    #: The learning-rate schedule, stepped once per step (also a skipped one): lr is a function of the step.
    scheduler: Any
    start: int = 0
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: int = 0


def _start(cfg: config.RunConfig, options: MethodOptions, resume: bool,
           model_and_tokenizer: tuple[nn.Module, Any] | None) -> _Run:
    """Validate, load, wrap, resume from the last checkpoint and write the run's records."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    # Several runs in one Python process (tests, notebooks) may use different precisions; the
    # distributed part of accelerate's state (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    tracker = tracking.resolve(cfg.train.tracker)
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=tracker,
                              project_dir=cfg.output_dir)
    if not accelerator.is_main_process:
        logging.getLogger("rna_train").setLevel(logging.WARNING)  # one copy of each log line
    t = cfg.train
    _check_distributed(cfg, accelerator, resume)
    out = Path(cfg.output_dir)
    _check_output_dir(out, resume, cfg)
    single = accelerator.distributed_type == DistributedType.NO
    # DDP keeps whole parameters on every process and FSDP2 shards them: the reference is the model
    # with the original values swapped in (whole tensors, or shards written in place); DeepSpeed
    # and FSDP1, which own flattened parameters, need a copy.
    fsdp2 = _is_fsdp2(accelerator)
    copy = accelerator.distributed_type == DistributedType.DEEPSPEED or (
        accelerator.distributed_type == DistributedType.FSDP and not fsdp2)
    prep = prepare(cfg, options, rank=accelerator.process_index, model_and_tokenizer=model_and_tokenizer,
                   shared_reference=not copy, load_truncated=single)
    before = dict(prep.model.named_parameters())
    optimizer = torch.optim.AdamW([before[n] for n in prep.trainable], lr=t.lr, betas=tuple(t.betas),
                                  eps=t.eps, weight_decay=t.weight_decay)
    if prep.reference is not None:
        prep.reference.to(accelerator.device)
    scheduler = _scheduler(optimizer, t)
    prep.model.train(t.dropout)
    if t.gradient_checkpointing:
        enable_checkpointing(prep.model, dropout=t.dropout)
    wrapped, optimizer = accelerator.prepare(prep.model, optimizer)
    unwrapped = accelerator.unwrap_model(wrapped)
    originals = prep.originals
    if originals is not None:
        originals = (sharded.local_originals(unwrapped, originals) if fsdp2
                     else {n: v.to(accelerator.device) for n, v in originals.items()})
        prep.originals = None  # the step holds them (only this process's shards under FSDP2)
    step = TrainStep(prep.method, unwrapped, prep.rna, forward=wrapped, reference=prep.reference,
                     originals=originals, shared_layers=_shared_layers(prep) if single else 0, truncate=single,
                     head_chunk_bytes=int(t.head_chunk_mib * 2**20), accelerator=accelerator, in_place=fsdp2,
                     reshard_after_forward=bool(getattr(getattr(accelerator.state, "fsdp_plugin", None),
                                                                "reshard_after_forward", True)))
    # FSDP2 replaces the parameters by sharded ones: look the trainable ones up after wrapping.
    params = dict(unwrapped.named_parameters())
    run = _Run(cfg, prep, accelerator, wrapped, unwrapped, optimizer, step, out,
               {n: params[n] for n in prep.trainable}, scheduler)
    _resume_and_record(run, resume)
    if tracker is not None:
        accelerator.init_trackers(tracking.project_name(tracker),
                                  config=tracking.hyperparameters(config.to_dict(cfg)))
    return run


def _reference_kind(step: TrainStep) -> str:
    """How the frozen reference is held, for environment.json."""
    if step.reference is not None:
        return "copy"
    if step.originals is None:
        return "none"
    return "shared: original shards written in place (FSDP2)" if step.in_place else "shared: original values swapped in"


def _resume_and_record(run: _Run, resume: bool) -> None:
    """Load the last checkpoint (``--resume``) and write config.yaml, environment.json, metrics.jsonl."""
    ckpt_dir = run.out / "checkpoints"
    if resume and (found := checkpoint.list_checkpoints(ckpt_dir)):
        meta = checkpoint.load(found[-1], run.model, run.optimizer, run.prep.trainable)
        run.start = int(meta["step"])
        if "scheduler" in meta:
            run.scheduler.load_state_dict(meta["scheduler"])
        log.info("resuming from %s (step %d)", found[-1], run.start)
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting from step 0", ckpt_dir)
    if run.accelerator.is_main_process:
        run.out.mkdir(parents=True, exist_ok=True)
        config.dump_yaml(run.cfg, run.out / "config.yaml")
        schedule = run.prep.rna.schedule
        resolved = {"trainable": run.prep.trainable, "rna_layer": run.prep.rna.layer,
                    "rna_schedule": config.to_dict(schedule) if schedule else None,
                    "rna_auto": run.cfg.rna.auto.chosen, "reference": _reference_kind(run.step)}
        (run.out / "environment.json").write_text(json.dumps({**environment(run.accelerator),
                                                              "resolved": resolved}, indent=1))
        run.metrics = _kept_metrics(run.out / "metrics.jsonl", run.start)
        (run.out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in run.metrics))
    run.accelerator.wait_for_everyone()


def train(cfg: config.RunConfig, options: MethodOptions, *, resume: bool = False,
          model_and_tokenizer: tuple[nn.Module, Any] | None = None) -> TrainResult:
    """Run (or resume) an unlearning run and save its outputs under ``cfg.output_dir``.

    Writes ``config.yaml`` (resolved), ``environment.json``, ``metrics.jsonl`` (one line per step
    with every loss term), ``checkpoints/``, the final ``model/`` (``save_pretrained`` weights,
    tokenizer and config) and, last, the ``DONE`` marker.
    """
    from tqdm.auto import tqdm

    run = _start(cfg, options, resume, model_and_tokenizer)
    t, prep, accelerator = cfg.train, run.prep, run.accelerator
    if t.reference_cache:
        with _out_of_memory_advice(cfg, run.start, "the reference pass before step 1"):
            run.step.cache = _prefill(run)
    bar = tqdm(range(run.start, t.steps), initial=run.start, total=t.steps, desc="unlearn",
               disable=not (t.progress and accelerator.is_local_main_process))
    for step in bar:
        torch.manual_seed(step_seed(cfg.seed, step, accelerator.process_index, salt=2))
        topic, forget, retain, counts = _step_batches(run, step)
        with _out_of_memory_advice(cfg, step):
            terms = run.step(step, topic, forget, retain, counts)
        if _update(run, step, terms):
            terms.update(_evaluate(run, step))
            row = _record(run, step, topic, terms)
            bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "forget", "retain") if k in row})
        run.scheduler.step()
        _save_periodic(run, step)
    bar.close()
    for tracker in accelerator.trackers:  # (not end_training(): it also destroys the process group)
        tracker.finish()
    accelerator.wait_for_everyone()
    # get_state_dict gathers sharded weights; the full dict is only needed to save the model.
    partitioned = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    full_save = t.save_model and prep.source_checkpoint is None  # a truncated run patches the checkpoint
    state = (accelerator.get_state_dict(run.wrapped) if full_save or partitioned
             else checkpoint.trainable_state(run.model, prep.trainable))
    if accelerator.is_main_process:
        _finish(run.out, run.model, state, prep, cfg)
    accelerator.wait_for_everyone()
    trainable = prep.trainable
    if lora.is_lora(run.model) and cfg.model.lora.save == "merged" and not partitioned:
        trainable = lora.unload(run.model)  # the returned model is plain, like the saved one
    return TrainResult(model=run.model, reference=prep.reference, trainable=trainable, metrics=run.metrics,
                       output_dir=run.out, tokenizer=prep.tokenizer)


def _step_batches(run: _Run, step: int) -> tuple[int, list[dict[str, torch.Tensor]],
                                                 list[dict[str, torch.Tensor]] | None, dict[str, Counts]]:
    """Step ``step``'s topic, this process's forget and retain micro-batches, and the global counts."""
    t, prep = run.cfg.train, run.prep
    rank, procs = run.accelerator.process_index, run.accelerator.num_processes
    topic, f_idx, r_idx = _step_indices(prep, step)
    corpus = prep.forget[topic]
    parts = procs * t.grad_accum
    counts = {"forget": _counts(corpus, f_idx, parts)}
    forget = [_batch(corpus, m) for m in _micro_batches(f_idx, rank, procs, t.grad_accum)]
    retain = None
    if prep.retain is not None and r_idx is not None:
        counts["retain"] = _counts(prep.retain, r_idx, parts)
        retain = [_batch(prep.retain, m) for m in _micro_batches(r_idx, rank, procs, t.grad_accum)]
    return topic, forget, retain, counts


def _update(run: _Run, step: int, terms: dict[str, float]) -> bool:
    """The optimizer update of step ``step``, or its refusal on a non-finite loss or gradient
    (stop the run, or skip the step per ``train.nonfinite``); True when the weights were updated."""
    t, accelerator = run.cfg.train, run.accelerator
    bad = _nonfinite(terms, run.params, accelerator)
    if bad is not None:
        run.skipped += 1
        what = (f"non-finite {bad} at step {step + 1} of method {run.cfg.method['name']!r}"
                f"{f' (skipped {run.skipped} step(s))' if t.nonfinite == 'skip' else ''}")
        if t.nonfinite == "stop" or run.skipped > t.max_skipped_steps:
            kept = checkpoint.list_checkpoints(run.out / "checkpoints")
            raise RNAError(what + "; no model was saved"
                           + (f"; the last good checkpoint is {kept[-1]}" if kept else ""), where="train",
                           fix="lower train.lr, set train.max_grad_norm, use fp32 (train.mixed_precision=no), "
                               "or set train.nonfinite=skip; resume with --resume")
        log.warning("%s; skipping the update", what)
        run.optimizer.zero_grad(set_to_none=True)
        return False
    if t.max_grad_norm is not None:
        terms["grad_norm"] = float(accelerator.clip_grad_norm_(list(run.params.values()), t.max_grad_norm))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return True


def _evaluate(run: _Run, step: int) -> dict[str, float]:
    """The registered ``train.eval.metrics`` after step ``step`` (every ``train.eval.every`` steps and at the
    end), as ``eval/<metric>/<key>``; every process computes them (sharded models need all of them)."""
    spec = run.cfg.train.eval
    if not spec.every or ((step + 1) % spec.every and step + 1 != run.cfg.train.steps):
        return {}
    from rna_train.eval.registry import get

    inputs = dataclasses.asdict(spec)
    out = {}
    with evaluating(run.model):
        for name in spec.metrics:
            for key, value in get(name).compute(run.model, run.prep.tokenizer, inputs).items():
                out[f"eval/{name}/{key}"] = float(value)
    log.info("eval after step %d: %s", step + 1, " ".join(f"{k}={v:.4g}" for k, v in out.items()))
    return out


def _record(run: _Run, step: int, topic: int, terms: dict[str, float]) -> dict[str, Any]:
    """Append step ``step``'s metrics row (loss terms averaged over processes) and log it."""
    t, accelerator = run.cfg.train, run.accelerator
    grad_norm = terms.pop("grad_norm", None)
    keys = sorted(terms)
    values = [terms[k] for k in keys]
    if accelerator.num_processes > 1:  # averaged over processes in float64: logged values keep their precision
        values = accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device),
                                    reduction="mean").tolist()
    row: dict[str, Any] = {"step": step + 1, "topic": run.prep.forget[topic].name,
                           **{k: float(v) for k, v in zip(keys, values, strict=True)},
                           "lr": run.scheduler.get_last_lr()[0], "nu": run.prep.rna.nu(step)}
    if grad_norm is not None:
        row["grad_norm"] = grad_norm
    run.metrics.append(row)
    if accelerator.is_main_process:
        with (run.out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    accelerator.log(tracking.numeric(row), step=step + 1)
    if (step + 1) % t.log_every == 0:
        log.info("step %d/%d %s", step + 1, t.steps, " ".join(f"{k}={row[k]:.4g}" for k in keys))
    return row


def _save_periodic(run: _Run, step: int) -> None:
    """Snapshots at ``train.snapshot_steps`` and checkpoints every ``train.checkpoint_every`` steps.

    Under FSDP2 every process takes part (the shards are gathered) and the main process writes.
    """
    t, accelerator = run.cfg.train, run.accelerator
    main = accelerator.is_main_process
    gather = accelerator.distributed_type.name == "FSDP"
    if step + 1 in t.snapshot_steps and (main or gather):
        state = (lora.merged_weights(run.model) if lora.is_lora(run.model)
                 else checkpoint.trainable_state(run.model, run.prep.trainable))
        if main:
            checkpoint.save_snapshot(run.out / "snapshots", step + 1, state)
    if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and step + 1 < t.steps:
        if main or gather:
            checkpoint.save(run.out / "checkpoints", step + 1, run.model, run.optimizer.optimizer, run.prep.trainable,
                            {"seed": run.cfg.seed, "rng": "stateless: batches from (seed, step), RNA noise from "
                                                          "(seed, step, sample), the rest from (seed, step, process)",
                             "scheduler": run.scheduler.state_dict()}, t.keep_checkpoints, write=main)
        accelerator.wait_for_everyone()


def _step_indices(prep: Prepared, step: int) -> tuple[int, list[int], list[int] | None]:
    """Step ``step``'s forget topic and global forget and retain batch indices (stateless)."""
    cfg, t = prep.cfg, prep.cfg.train
    n_topics = len(prep.forget)
    topic = step % n_topics
    corpus = prep.forget[topic]
    f_idx = batch_indices(len(corpus), t.batch_size, step // n_topics, seed=cfg.seed,
                          stream=stream_id(corpus.name), shuffle=cfg.data.shuffle)
    r_step = step // n_topics if cfg.data.retain_order == "per_topic_cycle" else step
    r_idx = (batch_indices(len(prep.retain), t.batch_size, r_step, seed=cfg.seed,
                           stream=stream_id("retain:" + prep.retain.name), shuffle=cfg.data.shuffle)
             if prep.retain is not None else None)
    return topic, f_idx, r_idx


def _prefill(run: _Run) -> ReferenceCache:
    """The reference pass before step 1: cache what every step of the run will read from the reference.

    Covers the sequences this process visits in steps ``1..train.steps`` (all of them, also when
    resuming, so a resumed run caches the same bits), in length-sorted micro-batches.
    """
    prep, t, accelerator = run.prep, run.cfg.train, run.accelerator
    rank, procs = accelerator.process_index, accelerator.num_processes
    forget: list[set[int]] = [set() for _ in prep.forget]
    retain: set[int] = set()
    for step in range(t.steps):
        topic, f_idx, r_idx = _step_indices(prep, step)
        forget[topic].update(i for m in _micro_batches(f_idx, rank, procs, t.grad_accum) for i in m)
        if r_idx is not None:
            retain.update(i for m in _micro_batches(r_idx, rank, procs, t.grad_accum) for i in m)
    size = t.batch_size // (procs * t.grad_accum)
    f_batches = [(topic, _batch(c, chunk)) for topic, c in enumerate(prep.forget)
                 for chunk in length_sorted_chunks([len(s) for s in c.sequences], forget[topic], size)]
    r_batches = ([_batch(prep.retain, chunk)
                  for chunk in length_sorted_chunks([len(s) for s in prep.retain.sequences], retain, size)]
                 if prep.retain is not None else [])
    cache = ReferenceCache(int(t.reference_cache_gib * 2**30))
    start = time.perf_counter()
    dataclasses.replace(run.step, cache=cache).prefill(f_batches, r_batches,
                                                       progress=t.progress and accelerator.is_local_main_process)
    if run.step.in_place:
        refused = not cache.complete
        flag = torch.tensor([float(refused)], device=accelerator.device)
        sharded.check_complete_cache(refused, float(accelerator.reduce(flag, reduction="sum")))
    held = cache.summary()
    log.info("reference pass: %d forget and %d retain sequences in %.1f s; cached %d values and %d layer "
             "outputs (layers %s, %.3f GiB of host memory)", sum(len(f) for f in forget), len(retain),
             time.perf_counter() - start, held["values"], held["states"], held["layers"], held["state_gib"])
    return cache


def _shared_layers(prep: Prepared) -> int:
    """How many leading decoder layers can be computed once per batch and shared.

    Every layer below the first trainable one has the same output for the updated and the
    original weights, unless RNA edits one of them (its hook must fire in each forward).
    """
    prefix = arch.layer_prefix(prep.model)
    first = min(int(n[len(prefix) + 1:].split(".")[0]) for n in prep.trainable)
    if prep.rna.active and prep.rna.layer < first:
        return 0
    return first


def _kept_metrics(path: Path, start: int) -> list[dict[str, Any]]:
    """Metric rows of steps ``<= start`` (a resumed run rewrites the steps after its checkpoint)."""
    if start == 0 or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= start]


def _finish(out: Path, model: nn.Module, state: dict[str, torch.Tensor], prep: Prepared,
            cfg: config.RunConfig) -> None:
    """Save trainable weights, the final model and tokenizer, then write the DONE marker.

    A layer-truncated run writes the source checkpoint with the trained tensors replaced. Every file
    is written under a temporary name and renamed; a failure (a full disk) removes the temporary
    files, keeps the checkpoints (``--resume`` redoes only the saving) and writes no DONE.
    """
    try:
        _save_final(out, model, state, prep, cfg)
    except Exception as exc:
        shutil.rmtree(out / ".model.tmp", ignore_errors=True)
        shutil.rmtree(out / ".adapter.tmp", ignore_errors=True)
        (out / ".trainable.safetensors.tmp").unlink(missing_ok=True)
        if not checkpoint.is_io_error(exc):
            raise
        kept = checkpoint.list_checkpoints(out / "checkpoints")
        raise RNAError(f"could not write the final model ({exc})", where=str(out),
                       fix="free disk space (or point output_dir elsewhere), then rerun with --resume"
                           + (f" (from {kept[-1]})" if kept else "")) from exc
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    (out / DONE).write_text(json.dumps({"steps": cfg.train.steps, "trainable": prep.trainable,
                                        "lora": config.to_dict(cfg.model.lora) if cfg.model.lora.rank else None},
                                       indent=1))
    log.info("finished: %s", out)


def _save_adapter(out: Path, model: nn.Module, cfg: config.RunConfig, state: dict[str, torch.Tensor]) -> None:
    """``adapter/``: the run's LoRA adapter in peft's format (loadable with ``rna eval OUT/adapter``)."""
    tmp = out / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base = cfg.model.name_or_path
    lora.save_adapter(model, tmp, str(Path(base).resolve()) if base and Path(base).is_dir() else base, state)
    config.dump_yaml(cfg, tmp / "rna_config.yaml")
    shutil.rmtree(out / "adapter", ignore_errors=True)
    tmp.rename(out / "adapter")


def _save_final(out: Path, model: nn.Module, state: dict[str, torch.Tensor], prep: Prepared,
                cfg: config.RunConfig) -> None:
    """``trainable.safetensors`` and (``train.save_model``) the final ``model/`` folder, each renamed into place.

    A LoRA run saves the merged matrices under their original names (``model.lora.save=merged``), or
    the adapter tensors and an ``adapter/`` folder instead of ``model/`` (``adapter``).
    """
    from safetensors.torch import save_file

    adapter = lora.is_lora(model) and cfg.model.lora.save == "adapter"
    names = prep.trainable
    if lora.is_lora(model) and not adapter:
        state, names = lora.plain_state(model, state), lora.merged_names(model)
    trained = {n: state[n].detach().to("cpu").contiguous().clone() for n in names}
    save_file(trained, str(out / ".trainable.safetensors.tmp"))
    (out / ".trainable.safetensors.tmp").replace(out / "trainable.safetensors")
    if not cfg.train.save_model:
        return
    if adapter:
        _save_adapter(out, model, cfg, state)
        return
    tmp = out / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    if prep.source_checkpoint is not None:
        save_patched(prep.source_checkpoint, tmp, trained)
    else:
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    prep.tokenizer.save_pretrained(tmp)
    config.dump_yaml(cfg, tmp / "rna_config.yaml")
    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
