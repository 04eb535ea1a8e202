"""Perturbed-query builder: exact one-keyword edits, unchanged answers, determinism per seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rna_theory.errors import RNAError
from rna_train.eval.keywords import builtin_keywords
from rna_train.eval.perturb import perturb_questions, perturb_text, word_spans
from rna_train.eval.probes import Question

_words = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1,
                 max_size=8)
_questions = st.builds(
    lambda words, seps, choices, answer_seed, subject: Question(
        "".join(w + s for w, s in zip(words, seps, strict=False)), tuple(choices),
        answer_seed % len(choices), subject),
    st.lists(_words, min_size=1, max_size=12),
    st.lists(st.sampled_from([" ", "  ", "\n", "\t "]), min_size=12, max_size=12),
    st.lists(_words, min_size=2, max_size=5),
    st.integers(0, 100),
    st.sampled_from(["bio", "math"]),
)
_keywords = st.lists(st.sampled_from(builtin_keywords("forget") + builtin_keywords("control") + ["x-y 2"]),
                     min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(_questions, min_size=1, max_size=5), _keywords, st.sampled_from(["insert", "substitute"]),
       st.integers(0, 2**32 - 1), st.sampled_from(["random", "start", "end", 0, 3, 50]))
def test_each_twin_differs_by_exactly_the_keyword(questions, keywords, mode, seed, position):
    pairs = perturb_questions(questions, keywords, mode=mode, seed=seed, position=position)
    assert len(pairs) == len(questions)
    for q, pair in zip(questions, pairs, strict=True):
        p, pert = pair.perturbed, pair.perturbation
        assert pair.clean == q
        assert (p.choices, p.answer, p.subject) == (q.choices, q.answer, q.subject)
        assert pert.keyword in keywords and pert.mode == mode
        assert p.question[pert.start:pert.end] == pert.keyword
        words, new, k = q.question.split(), p.question.split(), pert.keyword.split()
        i = pert.position
        if mode == "insert":
            assert new == words[:i] + k + words[i:]
            # removing the keyword and its one separating space gives back the clean text
            if i < len(words):
                assert p.question[:pert.start] + p.question[pert.end + 1:] == q.question
            else:
                assert p.question[:pert.start - 1] + p.question[pert.end:] == q.question
        else:
            assert new == words[:i] + k + words[i + 1:]
            assert pert.replaced == words[i]
            assert p.question[:pert.start] + pert.replaced + p.question[pert.end:] == q.question
    again = perturb_questions(questions, keywords, mode=mode, seed=seed, position=position)
    assert again == pairs


def test_seed_changes_draws_and_order_does_not_matter():
    qs = [Question(f"word{i} is here and there now", ("a", "b"), 0) for i in range(40)]
    kws = builtin_keywords("bio")
    a = perturb_questions(qs, kws, seed=1)
    b = perturb_questions(qs, kws, seed=2)
    assert [x.perturbation for x in a] != [x.perturbation for x in b]
    # question i's draw depends only on (seed, i): a prefix of the probe gets the same twins
    assert perturb_questions(qs[:10], kws, seed=1) == a[:10]


def test_positions_cover_the_range():
    q = Question("one two three", ("a", "b"), 1)
    seen = {perturb_questions([q], ["K"], seed=s)[0].perturbation.position for s in range(60)}
    assert seen == {0, 1, 2, 3}
    subs = perturb_questions
    seen = {subs([q], ["K"], mode="substitute", seed=s)[0].perturbation.position for s in range(60)}
    assert seen == {0, 1, 2}


def test_examples():
    assert perturb_text("What is DNA?", "anthrax", 2, "insert")[0] == "What is anthrax DNA?"
    assert perturb_text("What is DNA?", "anthrax", 3, "insert")[0] == "What is DNA? anthrax"
    assert perturb_text("What is DNA?", "anthrax", 2, "substitute")[0] == "What is anthrax"
    assert word_spans(" a  bc ") == [(1, 2), (4, 6)]


@pytest.mark.parametrize(("args", "match"), [
    (("a b", "K", 3, "insert"), "out of range"),
    (("a b", "K", 2, "substitute"), "out of range"),
    (("a b", "K", 0, "swap"), "unknown perturbation mode"),
    (("a b", "  ", 0, "insert"), "keyword is empty"),
])
def test_errors(args, match):
    with pytest.raises(RNAError, match=match):
        perturb_text(*args)


def test_bad_position_and_seed():
    q = [Question("a b", ("x", "y"), 0)]
    with pytest.raises(RNAError, match="invalid position"):
        perturb_questions(q, ["K"], position="middle")
    with pytest.raises(RNAError, match="seed"):
        perturb_questions(q, ["K"], seed=-1)
