"""Loading causal LMs, choosing what to train, and reading or perturbing a decoder layer's output.

Every architecture-specific lookup goes through :mod:`rna_train.arch`. Trainable parameters are
chosen by decoder-layer index and parameter *name* pattern (never by position in
``model.parameters()``), so a config stays valid across model families. Hidden states are read
with a forward hook on the decoder layer, which is exact for every layer (``output_hidden_states``
applies the final norm to the last one) and lets a forward stop right after the layer it needs.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rna_theory.errors import RNAError
from rna_train import arch
from rna_train.lora import adapter_base
from rna_train.truncated import drop_output_head, truncated_config

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}


def resolve_dtype(name: str) -> torch.dtype:
    """Map a config dtype name (fp32, bf16, fp16, fp64) to a torch dtype."""
    if name not in DTYPES:
        raise RNAError(f"unknown dtype {name!r}", where="model.dtype", fix=f"use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def check_local_path(path: str, where: str) -> None:
    """A path that is clearly local (absolute, ``./``, ``~``, or more than one ``/``) must exist: otherwise
    transformers reports it as a malformed Hub id or retries the network for a minute."""
    import os

    local = path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or (os.sep != "/" and os.sep in path)
    if local and not os.path.exists(os.path.expanduser(path)):
        raise RNAError(f"folder not found: {path}", where=where,
                       fix="check the path (a Hub id has the form owner/name; this machine may not reach the Hub)")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (``huggingface_hub.constants.ENDPOINT``) accepts a TCP connection,
    asked once per process: without it, each Hub request retries for most of a minute."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def cache_only(repo: str, filenames: Sequence[str], where: str) -> bool:
    """For a Hub id: True when it must be read from the local cache only (the Hub is unreachable and
    one of ``filenames`` is cached); an RNAError at once when the Hub is unreachable and it is not cached.
    False for local folders, in offline mode (transformers reads the cache itself) and when the Hub
    answers."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(repo).expanduser().exists() or constants.HF_HUB_OFFLINE or hub_reachable():
        return False
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in filenames):
        log.info("the Hub is not reachable: %s is read from the local cache", repo)
        return True
    raise RNAError(f"{repo!r} is neither a local folder nor in the local Hub cache, and the Hub is not reachable "
                   "from this machine", where=where,
                   fix="download it where the Hub is reachable and pass its folder (or point HF_ENDPOINT at a "
                       "reachable mirror)")


def load_tokenizer(path: str, *, gguf_file: str | None = None, trust_remote_code: bool = False,
                   revision: str | None = None) -> Any:
    """Load a tokenizer from a Hub id or folder and make sure it can pad (right side)."""
    from transformers import AutoTokenizer

    check_local_path(path, "model.tokenizer")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if cache_only(path, [gguf_file] if gguf_file else ["tokenizer_config.json", "tokenizer.json"], "model.tokenizer"):
        kwargs["local_files_only"] = True
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if revision:
        kwargs["revision"] = revision
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise RNAError(f"cannot load a tokenizer from {path!r}: {exc}", where="model.tokenizer",
                       fix="pass a Hub id or a folder with tokenizer files") from None
    if tok.pad_token is None:
        fallback = tok.eos_token or tok.unk_token
        if fallback is None:
            raise RNAError("the tokenizer has no pad, eos or unk token", where="model.tokenizer",
                           fix="use a tokenizer that defines a pad or eos token")
        tok.pad_token = fallback
    tok.padding_side = "right"
    return tok


def load_model(name_or_path: str | None = None, *, from_config: Mapping[str, Any] | None = None,
               tokenizer: str | None = None, gguf_file: str | None = None, dtype: str = "fp32",
               trust_remote_code: bool = False, revision: str | None = None, seed: int = 0,
               attn_implementation: str | None = None, keep_layers: int | None = None,
               ) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` from a Hub id, a local folder, a GGUF file, or a config.

    Args:
        name_or_path: Hub id or folder (``None`` with ``from_config``).
        from_config: keyword arguments of ``AutoConfig.for_model`` (must hold ``model_type``); the
            model is randomly initialised under ``seed``. Used for tiny test models and for
            GPU-memory checks at real sizes without downloading weights.
        tokenizer: tokenizer id or folder (default: ``name_or_path``).
        gguf_file: file name inside ``name_or_path`` holding GGUF weights (needs ``gguf``).
        dtype: ``fp32`` | ``bf16`` | ``fp16`` | ``fp64``.
        trust_remote_code: run code shipped with the checkpoint (off unless asked: it executes
            arbitrary Python from the model repository).
        revision: Hub revision.
        seed: initialisation seed for ``from_config``.
        attn_implementation: forwarded to transformers (e.g. ``eager``, ``sdpa``).
        keep_layers: load only the embeddings and the first ``keep_layers`` decoder layers of a
            checkpoint (no untied output head): for losses that never read higher layers
            (:mod:`rna_train.truncated`).

    A folder holding a peft adapter (``adapter_config.json``, e.g. a LoRA run's ``adapter/``) loads
    its base model and merges the adapter into it.
    """

    torch_dtype = resolve_dtype(dtype)
    if name_or_path is not None:
        check_local_path(name_or_path, "model.name_or_path")
        if from_config is None and (base := adapter_base(Path(name_or_path))) is not None:
            return _with_adapter(name_or_path, base, tokenizer=tokenizer, dtype=dtype,
                                 trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    local_only = from_config is None and name_or_path is not None and cache_only(
        name_or_path, [gguf_file or "config.json"], "model.name_or_path")
    if trust_remote_code:
        log.warning("trust_remote_code is on: code from %s will run on this machine", name_or_path)
    tok_path = tokenizer or name_or_path
    if tok_path is None:
        raise RNAError("no tokenizer given", where="model.tokenizer",
                       fix="set model.tokenizer to a tokenizer folder when using model.from_config")
    try:
        tok = load_tokenizer(tok_path, gguf_file=gguf_file if tokenizer is None else None,
                             trust_remote_code=trust_remote_code, revision=revision)
    except RNAError as exc:
        if tokenizer is not None:
            raise
        # the tokenizer comes from the model's own folder or Hub id: name that, not model.tokenizer
        raise RNAError(exc.what, where="model.name_or_path",
                       fix="pass a local model folder, or a Hub id where the Hub is reachable "
                           "(the tokenizer is read from the same place)") from None
    extra: dict[str, Any] = {}
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    if from_config is not None:
        if name_or_path is not None:
            raise RNAError("both name_or_path and from_config are set", where="model",
                           fix="set only one of model.name_or_path and model.from_config")
        model = _from_config(from_config, tok, torch_dtype, seed, extra)
    else:
        if name_or_path is None:
            raise RNAError("no model given", where="model.name_or_path",
                           fix="set model.name_or_path (Hub id or folder) or model.from_config")
        kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, **extra}
        if revision:
            kwargs["revision"] = revision
        if local_only:
            kwargs["local_files_only"] = True
        model = _pretrained(name_or_path, kwargs, gguf_file, keep_layers)
    model.config.use_cache = False
    arch.layer_prefix(model)  # fail now, with the supported list, on an unknown layout
    return model, tok


def _with_adapter(folder: str, base: str, **kwargs: Any) -> tuple[nn.Module, Any]:
    """The base model an adapter folder names, with the adapter merged in (a plain model)."""
    from peft import PeftModel

    log.info("%s is an adapter of %s: loading the base model and merging the adapter", folder, base)
    try:
        model, tok = load_model(base, **kwargs)
    except RNAError as exc:
        raise RNAError(f"the adapter's base model could not be loaded: {exc.what}",
                       where=f"{folder}/adapter_config.json",
                       fix="set base_model_name_or_path there to the base model's folder") from None
    model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    model.config.use_cache = False
    return model, tok


def _from_config(from_config: Mapping[str, Any], tok: Any, torch_dtype: torch.dtype, seed: int,
                 extra: dict[str, Any]) -> nn.Module:
    """A randomly initialised model (under ``seed``) from ``AutoConfig.for_model`` keys."""
    from transformers import AutoConfig, AutoModelForCausalLM

    params = dict(from_config)
    model_type = params.pop("model_type", None)
    if not model_type:
        raise RNAError("from_config needs a model_type", where="model.from_config.model_type",
                       fix="add model_type: llama (or gpt2, mistral, ...)")
    params.setdefault("vocab_size", len(tok))
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        params.setdefault(key, getattr(tok, key, None))
    try:
        config = AutoConfig.for_model(model_type, **params)
    except (ValueError, TypeError) as exc:
        raise RNAError(f"cannot build a {model_type!r} config: {exc}", where="model.from_config",
                       fix="check model_type and the config keys") from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype, **extra)


def _pretrained(name_or_path: str, kwargs: dict[str, Any], gguf_file: str | None,
                keep_layers: int | None) -> nn.Module:
    """A checkpoint's model: safetensors only (never unpickled), or GGUF; optionally truncated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        _require_safetensors(name_or_path)
        kwargs["use_safetensors"] = True  # never unpickle weights
    try:
        if keep_layers is not None:
            full = AutoConfig.from_pretrained(name_or_path, trust_remote_code=kwargs["trust_remote_code"],
                                              **{k: kwargs[k] for k in ("revision", "local_files_only") if k in kwargs})
            kwargs["config"] = truncated_config(full, keep_layers)
        with _quiet_unexpected_keys(keep_layers is not None):
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise RNAError(f"cannot load a causal LM from {name_or_path!r}: {exc}", where="model.name_or_path",
                       fix="pass a Hub id, a folder with config.json and weights, or gguf_file") from None
    if gguf_file:
        model = _plain_copy(model, kwargs["dtype"])
    if keep_layers is not None:
        drop_output_head(model)
    return model


def _require_safetensors(name_or_path: str) -> None:
    """Refuse a local folder whose weights exist only in pickle formats (.bin/.pt/.pth/.ckpt).

    Unpickling runs arbitrary code from the file; safetensors cannot.
    """
    folder = Path(name_or_path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for ext in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in folder.glob(ext))
    if pickled:
        raise RNAError(f"weights only in pickle format ({', '.join(pickled[:3])}); rna loads safetensors only",
                       where=str(folder),
                       fix="convert once in a trusted environment: AutoModelForCausalLM.from_pretrained(folder)"
                           ".save_pretrained(out, safe_serialization=True)")


@contextlib.contextmanager
def _quiet_unexpected_keys(active: bool) -> Iterator[None]:
    """Silence transformers' load report while loading a truncated model on purpose.

    It lists every tensor of the skipped upper layers as unexpected; the trainer logs one line
    saying which layers it loads instead.
    """
    if not active:
        yield
        return
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _plain_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The same weights in a fresh model of the same class.

    transformers marks GGUF-loaded models as quantized and refuses ``save_pretrained`` on them,
    although their weights are already dequantised; a plain copy can be trained and saved.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    fresh.load_state_dict(model.state_dict())
    return fresh


def _matches(relative_name: str, pattern: str) -> bool:
    """True when ``pattern`` (a glob) names the parameter or a module containing it."""
    return fnmatch.fnmatchcase(relative_name, pattern) or fnmatch.fnmatchcase(relative_name, pattern + ".*")


def select_trainable(model: nn.Module, layers: Iterable[int], patterns: Sequence[str] | None = None,
                     ) -> list[str]:
    """Make exactly the named parameters trainable and freeze everything else.

    Args:
        layers: decoder-layer indices (0-based) whose matching parameters are trained.
        patterns: glob patterns on the parameter name *relative to the layer* (``mlp.down_proj``
            matches ``mlp.down_proj.weight`` and ``mlp.down_proj.bias``); default: the
            architecture's MLP output projection (:func:`rna_train.arch.default_trainable_patterns`).

    Returns:
        The full names of the trainable parameters, sorted.
    """
    layers = sorted(set(layers))
    if not layers:
        raise RNAError("no layers selected for training", where="model.trainable.layers",
                       fix="list at least one decoder-layer index")
    for i in layers:
        arch.check_layer(model, i, "model.trainable.layers")
    if patterns is not None and not patterns:
        raise RNAError("an empty pattern list selects no parameters", where="model.trainable.patterns",
                       fix="list parameter-name globs (e.g. mlp.down_proj) or leave the key out for the default")
    pats = tuple(patterns) if patterns else arch.default_trainable_patterns(model)
    prefix = arch.layer_prefix(model)
    chosen: list[str] = []
    hits = dict.fromkeys(pats, 0)
    for name, param in model.named_parameters():
        param.requires_grad_(False)
        for i in layers:
            head = f"{prefix}.{i}."
            if name.startswith(head):
                rel = name[len(head):]
                for pat in pats:
                    if _matches(rel, pat):
                        hits[pat] += 1
                        chosen.append(name)
                        param.requires_grad_(True)
                        break
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        sample = sorted({n[len(f"{prefix}.{layers[0]}."):] for n, _ in model.named_parameters()
                         if n.startswith(f"{prefix}.{layers[0]}.")})
        raise RNAError(f"parameter pattern(s) {missing} match nothing in layers {layers}",
                       where="model.trainable.patterns",
                       fix=f"use names relative to a decoder layer, e.g. {', '.join(sample[:6])}")
    return sorted(chosen)


def enable_checkpointing(model: nn.Module, *, dropout: bool) -> None:
    """Recompute each decoder layer in the backward pass (non-reentrant ``torch.utils.checkpoint``).

    transformers checkpoints a layer only while it is in training mode; without ``dropout`` only
    the decoder-layer modules themselves are flagged as training, so every dropout below them stays
    off (the model otherwise trains in eval mode). RNA's hooks sit outside the checkpointed forward
    and fire once.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RNAError(f"{type(model).__name__} does not support gradient checkpointing",
                       where="train.gradient_checkpointing", fix="set train.gradient_checkpointing=false")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is deprecated there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not dropout:
        for layer in arch.decoder_layers(model):
            layer.training = True


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no dropout) for the duration, every module's previous mode restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen, in eval mode: the original-weights reference."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class _Truncate(Exception):
    """Raised by a capture hook to stop a forward pass once the needed layer has run."""


def output_hidden(output: Any) -> torch.Tensor:
    """The hidden state in a decoder layer's raw output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """A decoder layer's raw output with its hidden state replaced by ``hidden``."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextlib.contextmanager
def edit_layer_output(model: nn.Module, layer: int,
                      fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, replace decoder layer ``layer``'s output hidden state ``h`` by ``fn(h)``.

    Used by RNA to add noise to a layer's output; the hook is removed on exit, so nothing is left
    registered (and nothing costs time) outside the block.
    """
    def hook(_mod: nn.Module, _inp: Any, output: Any) -> Any:
        return replace_hidden(output, fn(output_hidden(output)))

    handle = arch.decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def layer_output(model: nn.Module, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 *, forward: Callable[..., Any] | None = None, truncate: bool = True) -> torch.Tensor:
    """Output hidden state (batch x seq x d) of decoder layer ``layer`` (0-based).

    Args:
        model: the (unwrapped) model whose layer is read.
        forward: the callable to run instead of ``model`` (e.g. its DDP/FSDP wrapper).
        truncate: stop the forward pass right after ``layer``, skipping the remaining layers and
            the LM head. Disable it for wrapped distributed models, whose wrappers must see every
            forward complete.
    """
    return _capture(arch.decoder_layers(model)[layer], lambda: (forward or model)(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False), pick=output_hidden, stop=truncate)


def _capture(module: nn.Module, run: Callable[[], Any], *, pre: bool = False,
             pick: Callable[[Any], Any] = lambda x: x, stop: bool = True) -> Any:
    """``pick`` of ``module``'s output (or, with ``pre``, its positional inputs) while ``run`` runs.

    With ``stop`` the forward ends right there (nothing after ``module`` is computed).
    """
    store: list[Any] = []

    def hook(_mod: nn.Module, *args: Any) -> None:
        store.append(pick(args[-1]))
        if stop:
            raise _Truncate

    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        run()
    except _Truncate:
        pass
    finally:
        handle.remove()
    return store[0]


def head_input(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               *, forward: Callable[..., Any] | None = None) -> torch.Tensor:
    """The states entering the output head (after the final norm), batch x seq x d; the head never runs.

    ``forward`` runs instead of ``model`` (e.g. with original values swapped in); the forward
    stops at the head, so it is only for unwrapped models (see :func:`layer_output`).
    """
    return _capture(model.get_output_embeddings(), lambda: (forward or model)(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False), pre=True, pick=lambda args: args[0])


def original_values(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Detached copies of the named parameters: the frozen reference without a second model.

    Only the trainable tensors ever change, so the original model is the live module with these
    values swapped in (:func:`forward_with`); for RMU on a 7B model that is 3 matrices instead of
    a full copy of the weights.
    """
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def _has_parameter(model: nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    try:
        return leaf in model.get_submodule(owner)._parameters
    except AttributeError:
        return False


def forward_with(model: nn.Module, values: Mapping[str, torch.Tensor]) -> Callable[..., Any]:
    """A forward callable of ``model`` with ``values`` in place of the named parameters.

    Uses :func:`torch.func.functional_call`, which substitutes the tensors for the duration of the
    call without touching the ``Parameter`` objects, so autograd graphs already built on the live
    weights (the updated model's forward of the same step) stay valid. Module hooks still fire.
    """
    def forward(**kwargs: Any) -> Any:
        # Layers replaced by a replay (:func:`replay_prefix`) own no parameters to substitute.
        live = {n: v for n, v in values.items() if _has_parameter(model, n)}
        return torch.func.functional_call(model, live, args=(), kwargs=kwargs, strict=False)

    return forward


def prefix_output(model: nn.Module, layers: int, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, *, forward: Callable[..., Any] | None = None,
                  truncate: bool = True) -> Any:
    """The raw output object of decoder layer ``layers - 1`` (no gradient), for :func:`replay_prefix`.

    When nothing below layer ``layers`` is trainable, this output is the same for the updated and
    the original weights, so it is computed once per batch and shared by every forward.
    ``forward`` runs instead of ``model`` (e.g. the model with its original values swapped in);
    ``truncate`` stops the forward after that layer (not for a sharded model: see :func:`layer_output`).
    """
    with torch.no_grad():
        return _capture(arch.decoder_layers(model)[layers - 1], lambda: (forward or model)(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False), stop=truncate)


class _Replay(nn.Module):
    """Stands in for a decoder layer and returns a precomputed output (see :func:`replay_prefix`)."""

    def __init__(self, output: Any, replaced: nn.Module) -> None:
        super().__init__()
        self.output = output
        if hasattr(replaced, "attention_type"):  # some families pick the layer's mask by this
            self.attention_type = replaced.attention_type

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        """Ignore the inputs; return the stored output of the replaced stack of layers."""
        return self.output


@contextlib.contextmanager
def replay_prefix(model: nn.Module, layers: int, output: Any) -> Iterator[None]:
    """Within the block, decoder layers ``0 .. layers-1`` return ``output`` without computing.

    ``output`` is :func:`prefix_output`'s value for the batch the block's forwards run on; the
    embedding lookup, masks and position encodings still run (they are cheap), every layer from
    ``layers`` on computes as usual and hooks on them fire.
    """
    stack = arch.decoder_layers(model)
    saved = [stack[i] for i in range(layers)]
    try:
        for i in range(layers):
            stack[i] = _Replay(output, saved[i])
        yield
    finally:
        for i, module in enumerate(saved):
            stack[i] = module
