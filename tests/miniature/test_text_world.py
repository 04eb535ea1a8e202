"""The redesigned miniature world (context words, foreign-marker augmentation off, held-out text) and
the text-mode keyword-fragility metric on it. Tiny sizes: a few seconds."""

from __future__ import annotations

import numpy as np
import pytest

from rna_theory.errors import RNAError
from rna_train.eval.fragility import TextSpec
from rna_train.studies.miniature.world import WorldConfig, generate, heldout_docs

CTX = WorldConfig(n_entities=6, pretrain_docs_per_topic=20, unlearn_docs_per_topic=10, n_context=4,
                  context_per_sentence=1, foreign_marker_rate=0.0)


def _sentences(doc: str) -> list[list[str]]:
    """Sentences of a document: question-answer pairs end at their answer, others at ``.``."""
    out: list[list[str]] = [[]]
    for word in doc.split():
        if word == "Question:" and out[-1]:
            out.append([])
        out[-1].append(word)
        if word == "." or (len(out[-1]) > 1 and out[-1][-2] == "Answer:"):
            out.append([])
    return [s for s in out if s]


def test_default_world_keeps_its_digest_and_has_no_context_words() -> None:
    cfg = WorldConfig()
    assert "n_context" not in cfg.to_dict() and "context_per_sentence" not in cfg.to_dict()
    assert cfg.digest() == "c1f2adb1e383faab"  # setting 4's world: cache keys of existing base models hold
    world = generate(WorldConfig(n_entities=4, pretrain_docs_per_topic=5, unlearn_docs_per_topic=5))
    assert world.trigger_context == [] and world.control_context == []
    assert CTX.to_dict()["n_context"] == 4 and CTX.digest() != cfg.digest()


def test_context_words_run_through_each_topic_text() -> None:
    world = generate(CTX)
    own = {name: set(t.context) for name, t in world.topics.items()}
    assert all(len(words) == 4 for words in own.values())
    assert len(set().union(*own.values())) == 4 * len(own), "context words are topic specific"
    assert set(world.trigger_context) == own["bio"] | own["cyber"] and set(world.control_context) == own["craft"]
    assert set(world.trigger_context) <= set(world.vocabulary())
    for name, docs in [*world.forget_docs.items(), ("retain", world.retain_docs)]:
        for doc in docs:
            for sentence in _sentences(doc):
                if sentence[0] == "Question:":
                    continue
                hits = [w for w in sentence if any(w in words for words in own.values())]
                assert len(hits) == 1, sentence
                if name != "retain":
                    assert hits[0] in own[name]
    assert not set(world.trigger_context) & {w for d in world.retain_docs for w in d.split()}


def test_foreign_marker_rate_zero_puts_no_foreign_marker_in_pretraining_questions() -> None:
    def foreign_questions(cfg: WorldConfig) -> int:
        world = generate(cfg)
        marker_topic = {m: name for name, t in world.topics.items() for m in t.markers}
        entity_topic = {e: name for name, t in world.topics.items() for e in t.entities}
        count = 0
        for doc in world.pretrain_docs:
            for sentence in _sentences(doc):
                if sentence[0] == "Question:":
                    topic = next(entity_topic[w] for w in sentence if w in entity_topic)
                    count += any(marker_topic.get(w, topic) != topic for w in sentence)
        return count

    assert foreign_questions(CTX) == 0
    assert foreign_questions(WorldConfig(n_entities=6, pretrain_docs_per_topic=20, unlearn_docs_per_topic=10)) > 0


def test_forget_documents_borrow_retain_sentences_only_when_asked() -> None:
    def borrowed_share(rate: float) -> float:
        world = generate(WorldConfig(n_entities=6, pretrain_docs_per_topic=20, unlearn_docs_per_topic=20,
                                     forget_shared_rate=rate))
        retain_entities = {e for t in world.config.retain_topics for e in world.topics[t].entities}
        sentences = [s for docs in world.forget_docs.values() for d in docs for s in _sentences(d)]
        triggers = set(world.triggers)
        assert not any(triggers & set(d.split()) for d in world.retain_docs), "retain text never has triggers"
        return sum(bool(retain_entities & set(s)) for s in sentences) / len(sentences)

    assert borrowed_share(0.0) == 0.0
    assert 0.35 < borrowed_share(0.5) < 0.65


def test_bad_new_options_are_rna_errors() -> None:
    with pytest.raises(RNAError, match="context_per_sentence"):
        WorldConfig(n_context=3)
    with pytest.raises(RNAError, match="probability"):
        WorldConfig(foreign_marker_rate=1.5)
    with pytest.raises(RNAError, match="n_context"):
        WorldConfig(n_context=-1, context_per_sentence=1)
    with pytest.raises(RNAError, match="forget_shared_rate"):
        WorldConfig(forget_shared_rate=-0.1)


def test_heldout_docs_are_fresh_deterministic_and_leave_the_world_unchanged() -> None:
    world = generate(CTX)
    docs = heldout_docs(world, ["geo"], 5, sentences=9)
    assert docs == heldout_docs(world, ["geo"], 5, sentences=9) != heldout_docs(world, ["geo"], 5, sentences=9,
                                                                                  stream=1)
    assert len(docs) == 5 and all(len(_sentences(d)) == 9 for d in docs)
    geo = world.topics["geo"]
    assert {w for d in docs for w in d.split()} & set(geo.entities)
    assert not {w for d in docs for w in d.split()} & set(world.triggers + world.trigger_context)
    assert not set(docs) & set(world.pretrain_docs + world.retain_docs)
    assert generate(CTX).pretrain_docs == world.pretrain_docs
    with pytest.raises(RNAError, match="not in this world"):
        heldout_docs(world, ["nope"], 2)


# --- the text metric on a tiny pretrained miniature model -------------------------------------------------

SPEC = TextSpec(n_chunks=6, suffix_tokens=8, head_tokens=2, min_prefix_words=4, max_prefix_words=16, layer=1,
                n_boot=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny base model of a world with context words and no foreign markers, with its text data."""
    from rna_train.eval.loading import load_for_eval
    from rna_train.studies.miniature.pretrain import ModelSpec, PretrainSpec, load_or_pretrain
    from rna_train.studies.miniature.textmetric import text_data

    world = WorldConfig(n_entities=4, n_relations=2, pretrain_docs_per_topic=20, unlearn_docs_per_topic=6,
                        sentences_per_doc=3, n_context=3, context_per_sentence=1, foreign_marker_rate=0.0)
    shape = ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    base = load_or_pretrain(world, shape, PretrainSpec(steps=80, batch_size=8, max_length=32, lr=1e-2),
                            cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    model, tokenizer = load_for_eval(str(base.path))
    return base, model, tokenizer, text_data(base.world, docs_per_topic=3, sentences=6)


def test_groups_and_identical_suffix_tokens_across_conditions(tiny) -> None:
    from rna_train.eval.fragility import build_items, keyword_ids

    base, _, tokenizer, data = tiny
    assert data.groups == {"trigger_marker": base.world.triggers, "control_marker": base.world.control_words,
                           "trigger_context": base.world.trigger_context,
                           "control_context": base.world.control_context}
    words = [w for ws in data.groups.values() for w in ws]
    ids = keyword_ids(tokenizer, words)
    assert all(len(i) == 1 for i in ids), "every keyword is one token of the word-level tokenizer"
    items = build_items(data.retain, tokenizer, SPEC)
    assert len(items) == SPEC.n_chunks
    for item in items:
        doc = data.retain[item.doc].split()
        prefix = doc[max(0, item.position - SPEC.max_prefix_words):item.position]
        for word, kw in zip(words, ids):
            inserted = tokenizer(" ".join([*prefix, word, *doc[item.position:]]))["input_ids"]
            assert inserted[:len(item.prefix_ids)] == list(item.prefix_ids)
            assert inserted[len(item.prefix_ids)] == kw[0]
            assert inserted[len(item.prefix_ids) + 1:][:SPEC.suffix_tokens] == list(item.suffix_ids)


def test_metric_sees_a_planted_backdoor_and_nothing_elsewhere(tiny) -> None:
    from rna_train.eval.fragility import keyword_ids
    from rna_train.eval.planted import planted
    from rna_train.studies.miniature.textmetric import evaluate, excess_difference, offset_excess, pooled_excess

    _, model, tokenizer, data = tiny
    numbers, cells = evaluate(model, tokenizer, data, SPEC, n_nll_texts=4)
    assert numbers["forget_heldout"]["n_texts"] == 4 and numbers["retain_heldout"]["nll"] > 0
    same, same_cells = evaluate(model, tokenizer, data, SPEC, baseline=cells, n_nll_texts=4)
    assert all(v["mean"] == 0.0 for v in same["fragility"]["excess"]["nll"].values())
    triggers = data.groups["trigger_marker"] + data.groups["trigger_context"]
    with planted(model, 1, keyword_ids(tokenizer, triggers), 20.0):
        hit, hit_cells = evaluate(model, tokenizer, data, SPEC, baseline=cells, n_nll_texts=4)
    excess = hit["fragility"]["excess"]["nll"]
    assert excess["trigger_marker"]["mean"] > 0.3 and excess["trigger_context"]["mean"] > 0.3
    assert excess["control_marker"]["mean"] == 0.0 and excess["control_context"]["mean"] == 0.0
    pooled = pooled_excess([hit_cells, same_cells], cells, SPEC)
    assert pooled["trigger_marker"]["resampled"] == ["seed", "chunk", "keyword"]
    assert pooled["trigger_marker"]["mean"] == pytest.approx(excess["trigger_marker"]["mean"] / 2)
    assert pooled["control_context"]["mean"] == 0.0
    assert np.isfinite(pooled["trigger_context"]["low"])
    diff = excess_difference([hit_cells], [same_cells], cells, SPEC)
    assert diff["trigger_marker"]["mean"] == pytest.approx(excess["trigger_marker"]["mean"])
    assert diff["control_marker"] == {**diff["control_marker"], "mean": 0.0, "low": 0.0, "high": 0.0}
    profile = offset_excess(hit_cells, cells)
    assert len(profile["trigger_marker"]) == SPEC.suffix_tokens and np.mean(profile["trigger_marker"]) > 0.3
    assert profile["control_marker"] == [0.0] * SPEC.suffix_tokens


def test_footprint_diagnostics(tiny) -> None:
    from rna_train.eval.fragility import build_items, keyword_ids
    from rna_train.eval.planted import planted
    from rna_train.studies.miniature.textmetric import forget_state_change, state_profile

    _, model, tokenizer, data = tiny
    items = build_items(data.retain, tokenizer, SPEC)[:3]
    words = data.groups["trigger_marker"]
    plain = state_profile(model, tokenizer, items, words, layer=1)
    assert len(plain["shift"]) == SPEC.suffix_tokens and plain["keyword_norm"] > 0 and plain["clean_norm"] > 0
    with planted(model, 0, keyword_ids(tokenizer, words), 20.0):
        hit = state_profile(model, tokenizer, items, words, layer=0)
    assert min(hit["shift"]) > 15.0, "the planted vector is added at every position after the keyword"
    same = forget_state_change(model, model, tokenizer, data.forget[:2], 1,
                               {"markers": set(words), "none": {"<absent>"}})
    assert same["markers"]["change"] == 0.0 and same["markers"]["n_tokens"] > 0
    assert same["none"]["n_tokens"] == 0


def test_pooled_excess_refuses_other_cells(tiny) -> None:
    import dataclasses

    from rna_train.studies.miniature.textmetric import evaluate, excess_difference, pooled_excess

    _, model, tokenizer, data = tiny
    _, cells = evaluate(model, tokenizer, data, SPEC, n_nll_texts=2)
    _, other = evaluate(model, tokenizer, data, dataclasses.replace(SPEC, seed=1), n_nll_texts=2)
    with pytest.raises(RNAError, match="other cells"):
        pooled_excess([other], cells, SPEC)
    with pytest.raises(RNAError, match="no runs"):
        pooled_excess([], cells, SPEC)
    with pytest.raises(RNAError, match="other cells"):
        excess_difference([cells], [other], cells, SPEC)
