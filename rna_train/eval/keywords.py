"""Keyword lists for perturbed probes: shipped forget keywords (bio, cyber) and matched controls.

The lists are package data (``rna_train/data/keywords_*.txt``): one keyword per line, ``#``
comments. A keyword spec on the command line is a list name (``bio``, ``cyber``, ``forget`` =
bio + cyber, ``control``) or the path of a file in the same format.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.data import utf8_text

log = logging.getLogger(__name__)

#: Shipped list names -> package data files (``forget`` is the union of bio and cyber).
BUILTIN: dict[str, tuple[str, ...]] = {
    "bio": ("keywords_bio.txt",),
    "cyber": ("keywords_cyber.txt",),
    "forget": ("keywords_bio.txt", "keywords_cyber.txt"),
    "control": ("keywords_control.txt",),
}

_PIECE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def parse_keywords(text: str, where: str) -> list[str]:
    """Keywords from list-file text: one per line, blank lines and ``#`` comments ignored."""
    words = []
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            words.append(" ".join(word.split()))
    if not words:
        raise RNAError("keyword list is empty", where=where, fix="put one keyword per line")
    return words


def builtin_keywords(name: str) -> list[str]:
    """A shipped keyword list by name (see :data:`BUILTIN`)."""
    if name not in BUILTIN:
        raise RNAError(f"unknown keyword list {name!r}", where="keywords",
                       fix=f"use one of {', '.join(BUILTIN)} or the path of a keyword file")
    words: list[str] = []
    for filename in BUILTIN[name]:
        text = resources.files("rna_train").joinpath("data", filename).read_text(encoding="utf-8")
        words.extend(parse_keywords(text, f"rna_train/data/{filename}"))
    return words


def resolve_keywords(spec: str) -> tuple[str, list[str]]:
    """``(kind, keywords)`` for a list name or a keyword-file path; ``kind`` names the list."""
    if spec in BUILTIN:
        return spec, builtin_keywords(spec)
    path = Path(spec)
    if not path.is_file():
        raise RNAError(f"{spec!r} is neither a keyword list name nor a file", where="keywords",
                       fix=f"use one of {', '.join(BUILTIN)} or the path of a keyword file")
    return path.stem, parse_keywords(utf8_text(path), str(path))


def approx_tokens(word: str) -> int:
    """Tokenizer-free token-count estimate: each digit or symbol is a token, letter runs ~4 chars.

    Used to check that control words match forget keywords in length without a real tokenizer
    (BPE vocabularies split rare words and symbols much like this).
    """
    return sum(1 if not p.isalpha() else math.ceil(len(p) / 4) for p in _PIECE.findall(word))


#: Share of inserted keywords that may tokenise to the unknown token before an evaluation is refused.
MAX_UNKNOWN_SHARE = 0.5


def unknown_keywords(tokenizer: Any, words: Sequence[str]) -> list[str]:
    """The words whose tokenisation (as inserted, after a space) contains the tokenizer's unknown
    token: the model would see ``<unk>``, not the keyword. Byte-level tokenizers have none."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    return [w for w in dict.fromkeys(words) if unk in tokenizer(" " + w, add_special_tokens=False)["input_ids"]]


def check_known_keywords(tokenizer: Any, inserted: Sequence[str], where: str) -> None:
    """Warn when inserted keywords tokenise to ``<unk>``; refuse past :data:`MAX_UNKNOWN_SHARE` of the
    insertions (the measured "perturbation" would then be an unknown token, not the keywords)."""
    unknown = set(unknown_keywords(tokenizer, inserted))
    if not unknown:
        return
    share = sum(w in unknown for w in inserted) / len(inserted)
    listed = ", ".join(sorted(unknown)[:8]) + (" ..." if len(unknown) > 8 else "")
    what = (f"{share:.0%} of the inserted keywords ({len(unknown)} distinct: {listed}) tokenise to the unknown "
            "token, so the model sees <unk> instead of them")
    if share > MAX_UNKNOWN_SHARE:
        raise RNAError(what, where=where, fix="use keywords in the model's vocabulary (a keyword file, "
                                              "or the text mode's mined groups)")
    log.warning("%s (%s)", what, where)
