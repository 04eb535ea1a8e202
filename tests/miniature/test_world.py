"""Unit tests of the miniature-world generator: determinism, trigger placement, probe format."""

from __future__ import annotations

import json

import pytest

from rna_theory.errors import RNAError
from rna_train.eval.probes import load_probe
from rna_train.studies.miniature.world import TOPICS, WorldConfig, generate, write_world

SMALL = WorldConfig(n_entities=6, pretrain_docs_per_topic=20, unlearn_docs_per_topic=10)


def test_same_seed_same_world_and_different_seed_differs() -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert a.pretrain_docs == b.pretrain_docs
    assert a.forget_docs == b.forget_docs and a.retain_docs == b.retain_docs
    assert a.retain_probe == b.retain_probe and a.forget_probe == b.forget_probe
    other = generate(WorldConfig(seed=1, n_entities=6, pretrain_docs_per_topic=20, unlearn_docs_per_topic=10))
    assert other.pretrain_docs != a.pretrain_docs
    assert SMALL.digest() == WorldConfig(n_entities=6, pretrain_docs_per_topic=20,
                                         unlearn_docs_per_topic=10).digest() != other.config.digest()


def test_triggers_only_in_forget_topics() -> None:
    world = generate(SMALL)
    triggers = set(world.triggers)
    assert triggers == {w for t in SMALL.forget_topics for w in TOPICS[t][0][: SMALL.n_markers]}
    for docs in world.forget_docs.values():
        assert all(triggers & set(d.split()) for d in docs[:5]), "forget text is marked by triggers"
    for doc in world.retain_docs:
        assert not triggers & set(doc.split())
    for q in world.retain_probe + world.forget_probe:
        assert not triggers & set(q.question.split())
    control = set(world.control_words)
    assert not control & triggers
    assert not any(control & set(d.split()) for d in world.retain_docs)
    assert not any(control & set(d.split()) for docs in world.forget_docs.values() for d in docs)
    assert any(control & set(d.split()) for d in world.pretrain_docs), "controls are seen in pretraining"


def test_probes_are_well_formed_and_answerable(tmp_path) -> None:
    world = generate(SMALL)
    files = write_world(world, tmp_path)
    retain = load_probe(files.retain_probe)
    forget = load_probe(files.forget_probe)
    assert len(retain) == len(SMALL.retain_topics) * SMALL.n_entities * SMALL.n_relations
    assert {q.subject for q in retain} == set(SMALL.retain_topics)
    assert {q.subject for q in forget} == set(SMALL.forget_topics)
    vocab = set(world.vocabulary())
    for q in retain + forget:
        assert len(q.choices) == 4 and len(set(q.choices)) == 4 and 0 <= q.answer < 4
        words = q.question.split()
        topic = world.topics[q.subject]
        assert topic.facts[(words[5], words[3])] == q.choices[q.answer]
        assert set(words) <= vocab and set(q.choices) <= vocab
    rows = [json.loads(line) for line in files.forget["bio"].read_text().splitlines()]
    assert rows and all(set(r) == {"text"} for r in rows)
    assert files.triggers.read_text().split("\n")[1:] [: len(world.triggers)] == world.triggers


def test_bad_config_is_an_rna_error() -> None:
    with pytest.raises(RNAError, match="unknown topic"):
        WorldConfig(forget_topics=("nope",))
    with pytest.raises(RNAError, match="repeat"):
        WorldConfig(forget_topics=("bio",), retain_topics=("bio",))
