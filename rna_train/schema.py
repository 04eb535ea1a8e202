"""Generic config machinery: YAML 1.2 loading, ``key=value`` overrides and a dataclass checker.

:func:`from_dict` builds a (nested) dataclass from plain data, validating keys (did-you-mean),
types and the constraints each :func:`field` carries (``min``, ``max``, ``gt``, ``choices``, a
``parse`` hook, a ``shorthand``). It knows nothing about runs or methods, so the run config
(:mod:`rna_train.config`) and every method's options use it without importing each other.
"""


from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from rna_theory.errors import RNAError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``5e-5`` is a float and ``off``/``no`` stay strings.

    (YAML 1.1 reads ``mode: off`` as the boolean false and ``lr: 5e-5`` as a string.)
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)  # safe: _Loader subclasses SafeLoader


def field(default: Any = dataclasses.MISSING, *, doc: str = "", **constraints: Any) -> Any:
    """A dataclass field carrying its help text and constraints (min, max, gt, choices).

    Two more keys: ``parse`` (a ``(value, key) -> value`` function used instead of the generic
    type check) and ``shorthand`` (the mapping key a scalar value stands for, so ``rna.noise=0.05``
    in a file and ``rna.noise.nu=0.03`` as an override combine).
    """
    meta = {"doc": doc, **constraints}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check and convert ``value`` to the annotated type ``tp`` (errors name ``key``)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise RNAError("must not be null", where=key, fix="give a value")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except RNAError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, Sequence):
        (item,) = typing.get_args(tp) or (Any,)
        if item is str and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise RNAError(f"must be a list, got {value!r}", where=key, fix=f"write {key}: [...]")
        return [_convert(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise RNAError(f"must be a mapping, got {value!r}", where=key, fix=f"write {key}: {{...}}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RNAError(f"must be true or false, got {value!r}", where=key, fix="write true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RNAError(f"must be an integer, got {value!r}", where=key, fix="write a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RNAError(f"must be a number, got {value!r}", where=key, fix="write a number, e.g. 1e-5")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise RNAError(f"must be a string, got {value!r}", where=key, fix="quote the value")
        return str(value)
    raise RNAError(f"unsupported type {_type_name(tp)}", where=key)


def _check_constraints(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        allowed = ", ".join(map(str, choices))
        raise RNAError(f"invalid value {value!r}", where=key, fix=f"{hint}use one of {allowed}")
    items = value if isinstance(value, list) else [value]
    for v in items:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if "min" in meta and v < meta["min"]:
            raise RNAError(f"must be >= {meta['min']}, got {v}", where=key,
                           fix=f"use a value >= {meta['min']}")
        if "gt" in meta and v <= meta["gt"]:
            raise RNAError(f"must be > {meta['gt']}, got {v}", where=key, fix=f"use a value > {meta['gt']}")
        if "max" in meta and v > meta["max"]:
            raise RNAError(f"must be <= {meta['max']}, got {v}", where=key,
                           fix=f"use a value <= {meta['max']}")


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating keys, types and constraints."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RNAError(f"must be a mapping, got {type(data).__name__}", where=where,
                       fix="write key: value pairs under it")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise RNAError(f"unknown key {key!r}", where=f"{prefix}.{key}" if prefix else str(key),
                           fix=f"{hint}valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        parse = f.metadata.get("parse")
        value = parse(data[name], key) if parse else _convert(data[name], hints[name], key)
        _check_constraints(value, f.metadata, key)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-data form of a config dataclass (what is written as the resolved YAML; tuples as lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(obj)) if dataclasses.is_dataclass(obj) else obj


def shorthands(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted paths of ``cls``'s fields (recursively) whose scalar form stands for a mapping key."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if "shorthand" in f.metadata:
            out[key] = f.metadata["shorthand"]
        elif dataclasses.is_dataclass(hints[f.name]):
            out.update(shorthands(hints[f.name], f"{key}."))
    return out


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` for each field of an options dataclass (``rna methods``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        doc = f.metadata.get("doc", "")
        if "choices" in f.metadata:
            doc = f"{doc} (one of {', '.join(map(str, f.metadata['choices']))})".strip()
        out.append((f.name, _type_name(hints[f.name]), default, doc))
    return out


def _split_key(node: Any, parts: list[str], i: int) -> int:
    """End index of the key at ``parts[i:]`` in mapping ``node``: the longest dotted run of parts that is
    an existing key (``variants.npo-0.8.seeds`` finds the key ``npo-0.8``), else one part."""
    if isinstance(node, dict):
        for j in range(len(parts), i + 1, -1):
            if ".".join(parts[i:j]) in node:
                return j
    return i + 1


def set_dotted(data: dict[str, Any], dotted: str, value: Any, expand: Mapping[str, str] | None = None) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists, creating mappings as needed; a key that itself contains
    dots is matched whole when it exists.

    ``expand`` maps dotted paths whose scalar value is shorthand for a mapping to that mapping's
    key (:func:`shorthands`): setting ``rna.noise.nu`` where ``rna.noise`` is ``0.05`` first turns
    it into ``{nu: 0.05}``.
    """
    parts = dotted.split(".")
    node: Any = data
    i = 0
    while i < len(parts):
        j = _split_key(node, parts, i)
        part, last, where = ".".join(parts[i:j]), j == len(parts), ".".join(parts[:j])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RNAError(f"no list item {part!r}", where=where,
                               fix=f"use an index in 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            i = j
            continue
        if not isinstance(node, dict):
            raise RNAError("is not a mapping", where=".".join(parts[:i]), fix="override a nested key only")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            elif expand and where in expand and not isinstance(node[part], (dict, list)):
                node[part] = {expand[where]: node[part]}
            node = node[part]
        i = j


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key.path=value``; the value is parsed as YAML (``1e-5``, ``[5, 6]``, ``true``)."""
    if "=" not in text:
        raise RNAError(f"override {text!r} has no '='", where="overrides", fix="write key.path=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise RNAError(f"override {text!r} has no key", where="overrides", fix="write key.path=value")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RNAError(f"cannot parse value {raw!r}: {exc}", where=key, fix="quote the value") from None
    return key, value


def load_raw(path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = (),
             expand: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a YAML config (or copy a mapping; optional) and apply ``key=value`` overrides; nothing
    is validated yet (``expand``: scalar shorthands, see :func:`set_dotted`)."""
    import copy

    data: dict[str, Any] = {}
    if isinstance(path, Mapping):
        data = copy.deepcopy(dict(path))
    elif path is not None:
        p = Path(path)
        if not p.is_file():
            raise RNAError("config file not found", where=str(p), fix="check the --config path")
        try:
            loaded = yaml_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RNAError(f"invalid YAML: {exc}", where=str(p), fix="fix the YAML syntax") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise RNAError("the config must be a mapping", where=str(p), fix="write key: value pairs")
        data = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value, expand)
    return data
