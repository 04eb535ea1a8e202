"""Word-level tokenizer, tiny Llama, and cached pretraining from scratch on the miniature world.

Why cached: pretraining is the only slow step (about a minute on 2 CPU cores); the base model is a
pure function of (world config, model config, pretraining config), so it is stored under
``cache_dir/<hash>/`` and reused. Everything downstream (unlearning, evaluation) is recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rna_theory.errors import RNAError
from rna_train.studies.miniature.world import World, WorldConfig, WorldFiles, generate, write_world

log = logging.getLogger(__name__)

#: Bump when the pretraining code changes in a way that changes the model.
CACHE_VERSION = 1
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


def default_cache_dir() -> Path:
    """``$RNA_CACHE_DIR/miniature`` or ``~/.cache/rna/miniature``."""
    root = os.environ.get("RNA_CACHE_DIR")
    return Path(root) / "miniature" if root else Path.home() / ".cache" / "rna" / "miniature"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Shape of the tiny Llama (d <= 128, a few layers)."""

    hidden_size: int = 64
    intermediate_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 128

    def llama_config(self, vocab_size: int) -> dict[str, Any]:
        """Keys for ``model.from_config`` / ``LlamaConfig``."""
        return {"model_type": "llama", "vocab_size": vocab_size, "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_attention_heads,
                "max_position_embeddings": self.max_position_embeddings, "tie_word_embeddings": True,
                "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """Optimisation of the from-scratch pretraining."""

    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 50
    max_length: int = 64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """A pretrained base model on disk and the world it was trained on."""

    path: Path
    world: World
    files: WorldFiles
    meta: dict[str, Any]


def cache_key(world: WorldConfig, model: ModelSpec, pretrain: PretrainSpec) -> str:
    """Hash of everything that determines the base model."""
    blob = json.dumps({"version": CACHE_VERSION, "world": world.to_dict(), "model": dataclasses.asdict(model),
                       "pretrain": dataclasses.asdict(pretrain)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_tokenizer(world: World) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the world's vocabulary (whitespace split)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in world.vocabulary():
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=128)


def _lr(step: int, spec: PretrainSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(world: World, tokenizer: Any, model_spec: ModelSpec, spec: PretrainSpec, *,
             progress: bool = True) -> tuple[Any, list[float]]:
    """Train a randomly initialised tiny Llama on the pretraining corpus; returns (model, losses)."""
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    cfg = dict(model_spec.llama_config(len(tokenizer)))
    cfg.pop("model_type")
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    encoded = [ids[: spec.max_length] for ids in tokenizer(world.pretrain_docs)["input_ids"]]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(spec.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(spec.steps), desc="pretrain", disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(len(encoded), (spec.batch_size,), generator=gen).tolist()
        width = max(len(encoded[i]) for i in idx)
        ids = torch.zeros((len(idx), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        for group in opt.param_groups:
            group["lr"] = _lr(step, spec)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return model, losses


def load_or_pretrain(world_cfg: WorldConfig | None = None, model_spec: ModelSpec | None = None,
                     spec: PretrainSpec | None = None, *, cache_dir: str | Path | None = None,
                     progress: bool = True) -> BaseModel:
    """The base model for these specs: from ``cache_dir/<hash>/`` if present, else pretrained now.

    The world files (corpora, probes, keyword lists) are written next to the model so runs can
    point the trainer and ``rna eval`` at them. A cache folder is written under a temporary name
    and renamed, so an interrupted run never leaves a half-written cache entry.
    """
    world_cfg = world_cfg or WorldConfig()
    model_spec = model_spec or ModelSpec()
    spec = spec or PretrainSpec()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(world_cfg, model_spec, spec)
    root = cache / key
    world = generate(world_cfg)
    if (root / "DONE").is_file():
        log.info("miniature base model from cache %s", root)
        return BaseModel(root / "model", world, write_world(world, root / "world"),
                         json.loads((root / "meta.json").read_text()))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RNAError(f"cannot create the cache folder ({exc})", where=str(cache),
                       fix="pass a writable --cache-dir or set RNA_CACHE_DIR") from None
    tmp = cache / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("pretraining the miniature base model (%d steps) into %s", spec.steps, root)
    start = time.perf_counter()
    tokenizer = build_tokenizer(world)
    model, losses = pretrain(world, tokenizer, model_spec, spec, progress=progress)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    meta = {"key": key, "world": world_cfg.to_dict(), "model": dataclasses.asdict(model_spec),
            "pretrain": dataclasses.asdict(spec), "seconds": round(time.perf_counter() - start, 1),
            "final_loss": sum(losses[-50:]) / len(losses[-50:]), "vocab_size": len(tokenizer)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "DONE").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    log.info("pretrained in %.0f s (final loss %.3f)", meta["seconds"], meta["final_loss"])
    return BaseModel(root / "model", world, write_world(world, root / "world"), meta)
