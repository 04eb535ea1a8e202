"""Keyword groups mined from a forget and a retain corpus, for the text-mode fragility evaluation.

Three groups (docs/evaluation.md, "Keyword fragility on text"):

* ``forget``: the words most distinctive of the forget corpus: the log-odds ratio (forget vs
  retain) with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, *Fightin' Words*),
  which shrinks rare words towards zero, ranked by that ratio among the words that occur at least
  ``min_count`` times in the forget corpus and whose z-score is significant (z >= ``min_z``).
  Ranking by the ratio rather than by z keeps topic words ("algae", "amphibians") ahead of
  function words a topic merely uses more often ("they", "have"), which z favours for their
  frequency;
* ``control``: one word per forget keyword, absent from the forget corpus and leaning to the retain
  side (z <= 0), matched to it by token count (under the model's tokenizer, when given), then by
  character length and log frequency (greedy, without replacement): by default the frequency per
  word of each word's own corpus (``match_frequency="rate"``), so controls are as common in the
  retain text as the keywords are in the forget text; ``"count"`` matches raw counts instead (the
  SmolLM2 study's lists were mined that way, and its retain corpus is ~12x the forget corpus);
* ``on_topic``: on-topic words that never occur in the forget corpus: the paper's "SARS-CoV-2"
  and the packaged ``bio`` keywords, filtered.

Words are runs of letters (hyphens and apostrophes inside allowed) of at least ``min_chars``
characters, counted case-insensitively; the most frequent surface form is the one inserted. The
result is deterministic (ties broken by the word), and is saved with every run that uses it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError, check_int

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")
PAPER_KEYWORD = "SARS-CoV-2"
GROUPS: tuple[str, ...] = ("forget", "on_topic", "control")


@dataclasses.dataclass(frozen=True)
class ScoredWord:
    """A candidate word: surface form, counts in each corpus and its log-odds z-score."""

    word: str
    forget_count: int
    retain_count: int
    log_odds: float
    z: float


@dataclasses.dataclass(frozen=True)
class KeywordGroups:
    """The mined groups (``groups[name]`` = surface forms) and how they were chosen."""

    groups: dict[str, list[str]]
    scored: dict[str, list[ScoredWord]]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``keywords.json``)."""
        return {"groups": self.groups, "settings": self.settings,
                "scored": {k: [dataclasses.asdict(w) for w in v] for k, v in self.scored.items()}}

    def write(self, folder: Path) -> Path:
        """``keywords.json`` plus one ``<group>.txt`` list per group (the keyword-file format)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, words in self.groups.items():
            (folder / f"{name}.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
        path = folder / "keywords.json"
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path


def count_words(texts: Iterable[str], min_chars: int) -> tuple[collections.Counter, dict[str, str]]:
    """Lower-cased word counts and the most frequent surface form of each word."""
    counts: collections.Counter = collections.Counter()
    forms: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for text in texts:
        for word in _WORD.findall(text):
            if len(word) >= min_chars:
                counts[word.lower()] += 1
                forms[word.lower()][word] += 1
    surface = {w: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for w, c in forms.items()}
    return counts, surface


def log_odds(forget: collections.Counter, retain: collections.Counter,
             prior_total: float = 1000.0) -> dict[str, tuple[float, float]]:
    """``(log-odds ratio, z-score)`` per word, forget vs retain, with an informative Dirichlet prior."""
    n_f, n_r = sum(forget.values()), sum(retain.values())
    total = n_f + n_r
    out = {}
    for word in set(forget) | set(retain):
        y_f, y_r = forget.get(word, 0), retain.get(word, 0)
        a = prior_total * (y_f + y_r) / total
        delta = (math.log((y_f + a) / (n_f + prior_total - y_f - a))
                 - math.log((y_r + a) / (n_r + prior_total - y_r - a)))
        out[word] = (delta, delta / math.sqrt(1.0 / (y_f + a) + 1.0 / (y_r + a)))
    return out


def _token_count(tokenizer: Any, word: str) -> int:
    if tokenizer is None:
        return 0
    return len(tokenizer(" " + word, add_special_tokens=False)["input_ids"])


def mine_keywords(forget_texts: Sequence[str], retain_texts: Sequence[str], *, n: int = 40, min_count: int = 5,
                  min_chars: int = 4, min_z: float = 1.96, tokenizer: Any = None,
                  on_topic: Sequence[str] | None = None, match_frequency: str = "rate") -> KeywordGroups:
    """Mine the three keyword groups (see the module docstring)."""
    check_int(n, "n keywords", minimum=1)
    if match_frequency not in ("rate", "count"):
        raise RNAError(f"match_frequency must be rate or count, got {match_frequency!r}", where="keyword mining",
                       fix="use rate (per-word frequency in each corpus) or count")
    check_int(min_count, "min_count", minimum=1)
    f_counts, f_forms = count_words(forget_texts, min_chars)
    r_counts, r_forms = count_words(retain_texts, min_chars)
    if not f_counts or not r_counts:
        raise RNAError(f"a corpus has no words of at least {min_chars} letters", where="keyword mining",
                       fix="pass non-empty forget and retain corpora")
    odds = log_odds(f_counts, r_counts)
    forget = sorted((w for w in f_counts if f_counts[w] >= min_count and odds[w][1] >= min_z),
                    key=lambda w: (-odds[w][0], w))[:n]
    if len(forget) < n:
        raise RNAError(f"only {len(forget)} forget words occur >= {min_count} times with z >= {min_z} (wanted {n})",
                       where="keyword mining", fix="lower --min-count or --n-keywords, or use a larger forget corpus")
    pool = sorted((w for w in r_counts if w not in f_counts and r_counts[w] >= min_count and odds[w][1] <= 0),
                  key=lambda w: w)
    scale = sum(f_counts.values()) / sum(r_counts.values()) if match_frequency == "rate" else 1.0
    controls = _match_controls(forget, pool, f_counts, r_counts, tokenizer, f_forms, r_forms, scale)
    topical = [PAPER_KEYWORD, *(on_topic if on_topic is not None else _packaged_bio())]
    topical = list(dict.fromkeys(w for w in topical if not any(p.lower() in f_counts for p in _WORD.findall(w))))

    def scored(words: list[str]) -> list[ScoredWord]:
        return [ScoredWord((f_forms | r_forms)[w], f_counts.get(w, 0), r_counts.get(w, 0), round(odds[w][0], 4),
                           round(odds[w][1], 4)) for w in words]

    return KeywordGroups(
        groups={"forget": [f_forms[w] for w in forget], "on_topic": topical,
                "control": [r_forms[w] for w in controls]},
        scored={"forget": scored(forget), "control": scored(controls)},
        settings={"n": n, "min_count": min_count, "min_chars": min_chars, "min_z": min_z,
                  "score": "log-odds ratio, informative Dirichlet prior of total 1000",
                  "control_match": "token count, then |length difference|, then |log frequency ratio| "
                                   f"({match_frequency})",
                  "tokenizer": getattr(tokenizer, "name_or_path", None)})


def _packaged_bio() -> list[str]:
    from rna_train.eval.keywords import builtin_keywords

    return builtin_keywords("bio")


def _match_controls(forget: list[str], pool: list[str], f_counts: collections.Counter,
                    r_counts: collections.Counter, tokenizer: Any, f_forms: dict[str, str],
                    r_forms: dict[str, str], scale: float = 1.0) -> list[str]:
    """One control per forget keyword: same token count, closest length and log frequency (retain
    counts times ``scale``: the forget/retain corpus-size ratio for per-word rates, 1 for raw counts)."""
    if len(pool) < len(forget):
        raise RNAError(f"only {len(pool)} retain-side control candidates for {len(forget)} keywords",
                       where="keyword mining", fix="use a larger retain corpus or lower --min-count")
    tokens = {w: _token_count(tokenizer, r_forms[w]) for w in pool}
    chosen: list[str] = []
    free = set(pool)
    for word in forget:
        want_tokens = _token_count(tokenizer, f_forms[word])
        freq = math.log(f_counts[word])

        def cost(c: str, want_tokens: int = want_tokens, word: str = word, freq: float = freq) -> tuple:
            return (tokens[c] != want_tokens, abs(len(c) - len(word)),
                    round(abs(math.log(r_counts[c] * scale) - freq), 6), c)

        best = min(free, key=cost)
        free.discard(best)
        chosen.append(best)
    return chosen


def load_groups(specs: Sequence[str]) -> dict[str, list[str]]:
    """``NAME=SPEC`` items (SPEC: a packaged list name or a keyword file) -> ordered groups."""
    from rna_train.eval.keywords import resolve_keywords

    groups: dict[str, list[str]] = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise RNAError(f"keyword group {item!r} is not NAME=LIST", where="--group",
                           fix="write e.g. --group forget=runs/kw/forget.txt --group control=control")
        if name in groups:
            raise RNAError(f"keyword group {name!r} given twice", where="--group", fix="name each group once")
        groups[name.strip()] = resolve_keywords(spec.strip())[1]
    return groups
