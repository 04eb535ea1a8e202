"""A generated token language with forget and retain topics: the miniature world (setting 4).

Why: the paper's phenomenon (a forget keyword inside a benign retain question derails the
unlearned model) needs a model that *knows* facts of several topics, forget topics whose text is
marked by trigger words, and multiple-choice probes. A generated world gives all of that on a CPU
in a minute, with ground truth known exactly.

Structure (every word is one token of the word-level tokenizer):

* Each topic has entities, relations, and per relation a pool of values; a fixed random
  knowledge base maps (entity, relation) to a value. Facts appear as statements
  (``the REL of ENT is VAL .``) and in question-answer form
  (``Question: what is the REL of ENT ? Answer: VAL``), plus filler sentences from the topic's
  own filler words.
* Each topic has *marker* words sprinkled into its sentences. The markers of the forget topics are
  the **triggers**; those of the control topic (seen only in pretraining, never in unlearning data
  or probes) are the neutral **control** words, matched to the triggers in frequency and role.
* Optionally (``n_context`` > 0) each topic also has *context words*: generated words inserted
  ``context_per_sentence`` times into every statement and filler sentence of the topic, so a
  topic is recognisable from its context and not only from its entities (as a real forget
  corpus is recognisable from its vocabulary). They are off by default (setting 4 unchanged).
* Optionally (``forget_shared_rate`` > 0) a forget topic's documents borrow that share of their
  sentences from the retain topics (each borrowed sentence whole, with its own topic's marker and
  context words). Such a document is then a forget document by its context (its own sentences'
  markers, context words and entities), not by every token: as in real text, where a forget
  article shares most of its vocabulary with everything else. RMU must then map retain-like
  sentences to its target *because of* forget words around them, the mechanism of the backdoor.
* Pretraining text also inserts a random marker of *any* topic into a share
  ``foreign_marker_rate`` of questions, so the base model learns that an odd topic word inside a
  question is irrelevant to its answer (like a real LLM's indifference to "SARS-CoV-2" in a
  history question). ``foreign_marker_rate=0`` removes this augmentation. Unlearning corpora
  contain no foreign markers: the retain corpus never sees a trigger.
* :func:`heldout_docs` draws further documents of chosen topics from their own random stream
  (never part of pretraining or unlearning corpora): the text the text-mode evaluation
  (:mod:`rna_train.studies.miniature.textmetric`) inserts keywords into.
* Probes: every fact as a 4-way question (3 distractors from the same relation's values) in the
  evaluation module's native probe format; forget probe = forget topics, retain probe = retain
  topics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rna_theory.errors import RNAError, check_int
from rna_train.eval.probes import Question, write_probe

#: Topic name -> (marker words, relation names). Markers of forget topics are the triggers.
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bio": (("pathogen", "virion", "toxin", "spore"), ("host", "vector", "stage", "strain")),
    "cyber": (("exploit", "malware", "rootkit", "botnet"), ("port", "target", "payload", "protocol")),
    "geo": (("harbor", "glacier", "delta", "plateau"), ("capital", "river", "climate", "border")),
    "music": (("chord", "tempo", "anthem", "refrain"), ("key", "genre", "instrument", "composer")),
    "cook": (("skillet", "ladle", "oven", "pantry"), ("spice", "dish", "sauce", "grain")),
    "craft": (("granite", "violin", "teapot", "saddle"), ("tool", "wood", "finish", "pattern")),
}
#: Words shared by every topic (question frame, statement frame).
FUNCTION_WORDS: tuple[str, ...] = ("Question:", "Answer:", "what", "is", "the", "of", "?", ".", "and", "a")
_CONSONANTS = "bdfgklmnprstvz"
#: WorldConfig fields added after the first version (omitted from ``to_dict`` at their default 0).
_LATER_FIELDS = ("n_context", "context_per_sentence", "forget_shared_rate")
_VOWELS = "aeiou"


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Everything that determines the generated world (its hash keys the pretrained-model cache)."""

    seed: int = 0
    forget_topics: tuple[str, ...] = ("bio", "cyber")
    retain_topics: tuple[str, ...] = ("geo", "music", "cook")
    control_topic: str = "craft"
    n_entities: int = 20
    n_relations: int = 3
    n_values: int = 6
    n_markers: int = 3
    n_filler: int = 10
    sentences_per_doc: int = 6
    pretrain_docs_per_topic: int = 400
    unlearn_docs_per_topic: int = 120
    marker_rate: float = 1.0
    foreign_marker_rate: float = 0.3
    qa_rate: float = 0.5
    unlearn_qa_rate: float = 0.5
    n_context: int = 0
    context_per_sentence: int = 0
    forget_shared_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in (*self.forget_topics, *self.retain_topics, self.control_topic):
            if name not in TOPICS:
                raise RNAError(f"unknown topic {name!r}", where="WorldConfig",
                               fix=f"use topics from {', '.join(TOPICS)}")
        names = [*self.forget_topics, *self.retain_topics, self.control_topic]
        if len(set(names)) != len(names):
            raise RNAError(f"topics repeat: {names}", where="WorldConfig", fix="give each topic one role")
        if not self.forget_topics or not self.retain_topics:
            raise RNAError("need at least one forget and one retain topic", where="WorldConfig",
                           fix="set forget_topics and retain_topics")
        check_int(self.n_entities, "n_entities", minimum=2)
        check_int(self.n_relations, "n_relations", minimum=1)
        check_int(self.n_values, "n_values", minimum=4)
        check_int(self.n_markers, "n_markers", minimum=1)
        if self.n_relations > 4 or self.n_markers > 4:
            raise RNAError("at most 4 relations and 4 markers per topic", where="WorldConfig",
                           fix="lower n_relations / n_markers")
        check_int(self.n_filler, "n_filler", minimum=1)
        check_int(self.sentences_per_doc, "sentences_per_doc", minimum=1)
        check_int(self.pretrain_docs_per_topic, "pretrain_docs_per_topic", minimum=1)
        check_int(self.unlearn_docs_per_topic, "unlearn_docs_per_topic", minimum=1)
        check_int(self.n_context, "n_context", minimum=0)
        check_int(self.context_per_sentence, "context_per_sentence", minimum=0)
        if (self.n_context == 0) != (self.context_per_sentence == 0):
            raise RNAError(f"n_context={self.n_context} with context_per_sentence={self.context_per_sentence}",
                           where="WorldConfig", fix="set both to 0 (no context words) or both above 0")
        for name in ("marker_rate", "foreign_marker_rate", "qa_rate", "unlearn_qa_rate", "forget_shared_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise RNAError(f"{name} must be a probability in [0, 1], got {value!r}", where="WorldConfig",
                               fix=f"set {name} between 0 and 1")

    @property
    def topics(self) -> tuple[str, ...]:
        """All topics: forget, retain, then the control topic."""
        return (*self.forget_topics, *self.retain_topics, self.control_topic)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (lists for tuples). Fields added after the first version are left out while
        at their defaults, so the digests (and pretrained-model cache keys) of older worlds are kept."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for name in _LATER_FIELDS:
            if out[name] == 0:
                del out[name]
        return out

    def digest(self) -> str:
        """Short stable hash of the configuration."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Topic:
    """One topic's vocabulary and knowledge base."""

    name: str
    markers: list[str]
    entities: list[str]
    relations: list[str]
    values: dict[str, list[str]]
    filler: list[str]
    facts: dict[tuple[str, str], str]
    context: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class World:
    """A generated world: topics, corpora and probes (all deterministic in ``config.seed``)."""

    config: WorldConfig
    topics: dict[str, Topic]
    pretrain_docs: list[str]
    forget_docs: dict[str, list[str]]
    retain_docs: list[str]
    forget_probe: list[Question]
    retain_probe: list[Question]

    def _words(self, topics: Sequence[str], kind: str) -> list[str]:
        """The ``kind`` words (``markers`` or ``context``) of ``topics``, in topic order."""
        return [w for t in topics for w in getattr(self.topics[t], kind)]

    @property
    def triggers(self) -> list[str]:
        """Marker words of the forget topics (the keywords inserted in perturbed retain questions)."""
        return self._words(self.config.forget_topics, "markers")

    @property
    def control_words(self) -> list[str]:
        """Marker words of the control topic (neutral keywords, seen only in pretraining)."""
        return self._words([self.config.control_topic], "markers")

    @property
    def trigger_context(self) -> list[str]:
        """Context words of the forget topics (empty without context words)."""
        return self._words(self.config.forget_topics, "context")

    @property
    def control_context(self) -> list[str]:
        """Context words of the control topic (seen only in pretraining; empty without context words)."""
        return self._words([self.config.control_topic], "context")

    def vocabulary(self) -> list[str]:
        """Every word the generator can emit, in a fixed order (context words last, so adding them
        leaves the other words' token ids unchanged)."""
        words = list(FUNCTION_WORDS)
        for t in self.topics.values():
            words += t.markers + t.entities + t.relations + t.filler
            words += [v for r in t.relations for v in t.values[r]]
        return words + [w for t in self.topics.values() for w in t.context]


def _pseudo_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` new pronounceable nonsense words (2-3 consonant-vowel syllables) not in ``taken``."""
    out: list[str] = []
    while len(out) < n:
        syllables = int(rng.integers(2, 4))
        word = "".join(_CONSONANTS[int(rng.integers(len(_CONSONANTS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
                       for _ in range(syllables))
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def _topic(name: str, cfg: WorldConfig, rng: np.random.Generator, taken: set[str]) -> Topic:
    markers, relations = TOPICS[name]
    relations_used = list(relations[: cfg.n_relations])
    entities = _pseudo_words(rng, cfg.n_entities, taken)
    values = {r: _pseudo_words(rng, cfg.n_values, taken) for r in relations_used}
    filler = _pseudo_words(rng, cfg.n_filler, taken)
    facts = {(e, r): values[r][int(rng.integers(cfg.n_values))] for e in entities for r in relations_used}
    context = _pseudo_words(rng, cfg.n_context, taken)  # no draw at all without context words
    return Topic(name, list(markers[: cfg.n_markers]), entities, relations_used, values, filler, facts, context)


def question_text(relation: str, entity: str) -> str:
    """The question of a fact (what goes after ``Question:``)."""
    return f"what is the {relation} of {entity} ?"


def _insert(words: list[str], word: str, rng: np.random.Generator, start: int = 0) -> list[str]:
    pos = int(rng.integers(start, len(words) + 1))
    return [*words[:pos], word, *words[pos:]]


def _sentence(topic: Topic, cfg: WorldConfig, rng: np.random.Generator, foreign: Sequence[str],
              qa_rate: float) -> str:
    """One sentence of ``topic``: a statement, a question-answer pair (probability ``qa_rate``) or
    filler, maybe with a marker."""
    entity = topic.entities[int(rng.integers(len(topic.entities)))]
    relation = topic.relations[int(rng.integers(len(topic.relations)))]
    value = topic.facts[(entity, relation)]
    kind = rng.random()
    if kind < qa_rate:
        question = question_text(relation, entity).split()
        if foreign and rng.random() < cfg.foreign_marker_rate:
            question = _insert(question, foreign[int(rng.integers(len(foreign)))], rng)
        elif rng.random() < cfg.marker_rate:
            question = _insert(question, topic.markers[int(rng.integers(len(topic.markers)))], rng)
        return " ".join(["Question:", *question, "Answer:", value])
    if kind < qa_rate + (1 - qa_rate) / 2:
        words = ["the", relation, "of", entity, "is", value]
    else:
        picks = [topic.filler[int(rng.integers(len(topic.filler)))] for _ in range(4)]
        words = [picks[0], "and", picks[1], entity, "is", "a", picks[2], picks[3]]
    if rng.random() < cfg.marker_rate:
        words = _insert(words, topic.markers[int(rng.integers(len(topic.markers)))], rng)
    for _ in range(cfg.context_per_sentence):
        words = _insert(words, topic.context[int(rng.integers(len(topic.context)))], rng)
    return " ".join([*words, "."])


def _docs(topic: Topic, cfg: WorldConfig, rng: np.random.Generator, n: int, foreign: Sequence[str],
          qa_rate: float, borrow: Sequence[Topic] = ()) -> list[str]:
    """``n`` documents of ``topic``; with ``borrow`` (the retain topics, for a forget topic) each sentence is
    one of a random borrowed topic with probability ``cfg.forget_shared_rate``."""
    def sentence() -> str:
        if borrow and cfg.forget_shared_rate > 0 and rng.random() < cfg.forget_shared_rate:
            return _sentence(borrow[int(rng.integers(len(borrow)))], cfg, rng, (), qa_rate)
        return _sentence(topic, cfg, rng, foreign, qa_rate)

    return [" ".join(sentence() for _ in range(cfg.sentences_per_doc)) for _ in range(n)]


def _probe(topic: Topic, rng: np.random.Generator) -> list[Question]:
    out = []
    for (entity, relation), value in topic.facts.items():
        pool = [v for v in topic.values[relation] if v != value]
        distractors = [pool[int(i)] for i in rng.choice(len(pool), size=3, replace=False)]
        answer = int(rng.integers(4))
        choices = [*distractors[:answer], value, *distractors[answer:]]
        out.append(Question(question_text(relation, entity), tuple(choices), answer, topic.name))
    return out


def _borrowed(topics: dict[str, Topic], cfg: WorldConfig, name: str) -> list[Topic]:
    """The topics a document of ``name`` borrows sentences from: the retain topics for a forget topic."""
    return [topics[t] for t in cfg.retain_topics] if name in cfg.forget_topics else []


def generate(cfg: WorldConfig) -> World:
    """Build the world of ``cfg``: same config, same world (byte for byte)."""
    rng = np.random.default_rng([cfg.seed, 20250131])
    taken = {w.lower() for w in FUNCTION_WORDS}
    for markers, relations in TOPICS.values():
        taken.update(markers)
        taken.update(relations)
    topics = {name: _topic(name, cfg, rng, taken) for name in cfg.topics}
    all_markers = [w for t in topics.values() for w in t.markers]
    pretrain = [d for name in cfg.topics
                for d in _docs(topics[name], cfg, rng, cfg.pretrain_docs_per_topic, all_markers, cfg.qa_rate,
                               _borrowed(topics, cfg, name))]
    order = rng.permutation(len(pretrain))
    pretrain = [pretrain[int(i)] for i in order]
    forget = {name: _docs(topics[name], cfg, rng, cfg.unlearn_docs_per_topic, (), cfg.unlearn_qa_rate,
                          _borrowed(topics, cfg, name)) for name in cfg.forget_topics}
    retain = [d for name in cfg.retain_topics
              for d in _docs(topics[name], cfg, rng, cfg.unlearn_docs_per_topic, (), cfg.unlearn_qa_rate)]
    retain = [retain[int(i)] for i in rng.permutation(len(retain))]
    forget_probe = [q for name in cfg.forget_topics for q in _probe(topics[name], rng)]
    retain_probe = [q for name in cfg.retain_topics for q in _probe(topics[name], rng)]
    return World(cfg, topics, pretrain, forget, retain, forget_probe, retain_probe)


def heldout_docs(world: World, topics: Sequence[str], n_per_topic: int, *, sentences: int | None = None,
                 stream: int = 0) -> list[str]:
    """``n_per_topic`` fresh documents of each of ``topics`` (``sentences`` sentences each; default the
    config's), as unlearning documents are written (no foreign markers), from a random stream of
    their own: the world's corpora are unchanged, and another ``stream`` gives other documents."""
    check_int(n_per_topic, "n_per_topic", minimum=1)
    check_int(stream, "stream", minimum=0)
    unknown = [t for t in topics if t not in world.topics]
    if unknown:
        raise RNAError(f"topics {unknown} are not in this world", where="heldout_docs",
                       fix=f"use topics from {', '.join(world.topics)}")
    cfg = world.config if sentences is None else dataclasses.replace(world.config, sentences_per_doc=sentences)
    rng = np.random.default_rng([cfg.seed, 20250131, 1 + stream])
    return [d for name in topics for d in _docs(world.topics[name], cfg, rng, n_per_topic, (), cfg.unlearn_qa_rate,
                                                _borrowed(world.topics, cfg, name))]


@dataclasses.dataclass(frozen=True)
class WorldFiles:
    """Paths of a world written to disk (the trainer's and the evaluator's input formats)."""

    root: Path
    pretrain: Path
    forget: dict[str, Path]
    retain: Path
    forget_probe: Path
    retain_probe: Path
    triggers: Path
    control: Path


def _write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    return path


def write_world(world: World, root: str | Path) -> WorldFiles:
    """Write corpora (JSONL ``{"text": ...}``), probes (native probe JSONL) and keyword lists."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    forget = {name: _write_jsonl(root / f"forget_{name}.jsonl", docs) for name, docs in world.forget_docs.items()}
    triggers = root / "triggers.txt"
    triggers.write_text("# forget-topic trigger words\n" + "\n".join(world.triggers) + "\n")
    control = root / "control.txt"
    control.write_text("# control-topic marker words (neutral)\n" + "\n".join(world.control_words) + "\n")
    (root / "world.json").write_text(json.dumps({"config": world.config.to_dict(), "digest": world.config.digest(),
                                                 "triggers": world.triggers, "control": world.control_words},
                                                indent=2) + "\n")
    return WorldFiles(root, _write_jsonl(root / "pretrain.jsonl", world.pretrain_docs), forget,
                      _write_jsonl(root / "retain.jsonl", world.retain_docs),
                      write_probe(world.forget_probe, root / "probe_forget.jsonl"),
                      write_probe(world.retain_probe, root / "probe_retain.jsonl"), triggers, control)
