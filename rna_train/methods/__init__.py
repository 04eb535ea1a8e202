"""The method registry: every unlearning method is one module in this package.

A method module defines a :class:`~rna_train.methods.base.Method` subclass with a ``name``, a
``summary`` and an ``Options`` dataclass, decorated with :func:`register`. Modules here are found
by :func:`available` automatically, so adding a method is one small file plus a config; the
training loop never branches on the method's name.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TypeVar

from rna_theory.errors import RNAError
from rna_train.methods.base import Method, MethodOptions

M = TypeVar("M", bound=type[Method])

_REGISTRY: dict[str, type[Method]] = {}
_NOT_METHODS = {"base"}


def register(cls: M) -> M:
    """Class decorator adding a :class:`Method` subclass to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise TypeError(f"method name {name!r} is already registered by {existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> dict[str, type[Method]]:
    """All registered methods by name (built-in modules are imported on first call)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``; an unknown name is an :class:`RNAError`."""
    methods = available()
    if name not in methods:
        near = difflib.get_close_matches(name, list(methods), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise RNAError(f"unknown method {name!r}", where="method.name",
                       fix=f"{hint}available: {', '.join(methods)} (see `rna methods`)")
    return methods[name]


__all__ = ["Method", "MethodOptions", "available", "get_method", "register"]
