"""Multiple-choice scoring against a hand computation, padding invariance and accuracy intervals."""

from __future__ import annotations

import math

import pytest

from rna_theory.errors import RNAError
from rna_train.eval.evaluate import evaluate
from rna_train.eval.metrics import proportion_ci, summarize
from rna_train.eval.probes import Question
from rna_train.eval.scoring import LETTERS, parse_scorings, score_questions

THREE = [
    Question("What is the capital of France?", ("Paris", "Rome", "Berlin", "Madrid"), 0, "geo"),
    Question("How many legs does a spider have?", ("six", "eight"), 1, "bio"),
    Question("Which gas do plants absorb from the air?", ("oxygen", "carbon dioxide", "helium"), 1, "bio"),
]


def _load(path):
    from rna_train.eval.loading import load_for_eval

    return load_for_eval(str(path), "fp32", "cpu")


def _hand_logprob(model, tok, context: str, continuation: str) -> tuple[float, int]:
    """log p(continuation | context) by one unpadded forward, summed token by token."""
    import torch

    ctx = tok(context)["input_ids"]
    full = tok(context + continuation)["input_ids"]
    assert full[: len(ctx)] == ctx
    with torch.no_grad():
        logp = model(torch.tensor([full])).logits[0].double().log_softmax(-1)
    total = sum(float(logp[j - 1, full[j]]) for j in range(len(ctx), len(full)))
    return total, len(full) - len(ctx)


@pytest.mark.parametrize("which", ["llama_dir", "gpt2_dir"])
def test_matches_hand_computation(which, request):
    model, tok = _load(request.getfixturevalue(which))
    got = score_questions(model, tok, THREE, ["loglik", "loglik_norm", "letter"], batch_size=3)
    correct = {"loglik": 0, "loglik_norm": 0, "letter": 0}
    for q, res in zip(THREE, got, strict=True):
        hand = [_hand_logprob(model, tok, f"Question: {q.question}\nAnswer:", " " + c) for c in q.choices]
        letter_ctx = "\n".join([f"Question: {q.question}"] + [f"{LETTERS[i]}. {c}" for i, c in
                                                              enumerate(q.choices)]) + "\nAnswer:"
        letters = [_hand_logprob(model, tok, letter_ctx, " " + LETTERS[i])[0] for i in range(len(q.choices))]
        assert res.scores["loglik"] == pytest.approx([s for s, _ in hand], abs=1e-4)
        assert res.scores["loglik_norm"] == pytest.approx([s / n for s, n in hand], abs=1e-4)
        assert res.scores["letter"] == pytest.approx(letters, abs=1e-4)
        assert res.n_tokens == [n for _, n in hand]
        by_hand = {"loglik": [s for s, _ in hand], "loglik_norm": [s / n for s, n in hand], "letter": letters}
        for s, values in by_hand.items():
            pred = max(range(len(values)), key=values.__getitem__)
            assert res.prediction(s) == pred
            correct[s] += pred == q.answer
        probs = res.probabilities("loglik")
        assert sum(probs) == pytest.approx(1.0)
        assert probs == pytest.approx([math.exp(s) / sum(math.exp(t) for t, _ in hand) for s, _ in hand],
                                      rel=1e-3)
    results, records = evaluate(model, tok, THREE, scorings=["loglik", "loglik_norm", "letter"])
    for s, k in correct.items():
        overall = results[s]["clean"]["overall"]
        assert (overall["k"], overall["n"]) == (k, 3)
        assert overall["rate"] == pytest.approx(k / 3)
    assert set(results["loglik"]["clean"]["by_subject"]) == {"geo", "bio"}
    assert len(records) == 3 and "perturbed" not in records[0]


@pytest.mark.parametrize("which", ["llama_dir", "gpt2_dir"])
def test_batching_and_padding_do_not_change_scores(which, request, probe_file):
    from rna_train.eval.probes import load_probe

    model, tok = _load(request.getfixturevalue(which))
    qs = load_probe(probe_file)
    one = score_questions(model, tok, qs, ["loglik", "letter"], batch_size=1)
    many = score_questions(model, tok, qs, ["loglik", "letter"], batch_size=7)
    for a, b in zip(one, many, strict=True):
        for s in ("loglik", "letter"):
            assert a.scores[s] == pytest.approx(b.scores[s], abs=1e-4)


def test_left_truncation_keeps_the_answer(llama_dir):
    model, tok = _load(llama_dir)
    long_q = Question("word " * 80 + "end?", ("yes", "no"), 0)
    full = score_questions(model, tok, [long_q], ["loglik"], max_length=256)[0]
    short = score_questions(model, tok, [long_q], ["loglik"], max_length=16)[0]
    assert full.n_tokens == short.n_tokens
    assert all(math.isfinite(v) for v in short.scores["loglik"])


def test_parse_scorings():
    assert parse_scorings("letter, loglik,letter") == ["letter", "loglik"]
    with pytest.raises(RNAError, match="unknown scoring"):
        parse_scorings("loglik,accuracy")


def test_intervals():
    from rna_theory.stats import clopper_pearson

    lo, hi = proportion_ci(7, 10, method="clopper-pearson", confidence=0.95)
    assert (lo, hi) == pytest.approx(clopper_pearson(7, 10, alpha=0.05), abs=1e-9)
    lo, hi = proportion_ci(7, 10, method="wilson")
    z = 1.959963984540054
    centre = (0.7 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.7 * 0.3 / 10 + z * z / 400)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    summary = summarize([True, False, True, True], ["a", "b", "a", "b"])
    assert summary["overall"]["k"] == 3 and summary["by_subject"]["b"]["rate"] == 0.5
    with pytest.raises(RNAError, match="interval"):
        proportion_ci(1, 2, method="bayes")


MIXED = [
    *THREE,
    Question("Which of these is a primary colour used in painting by most artists today?",
             ("red", "a very pale and washed out shade of green", "grey"), 0, "art"),
    Question("Sun?", ("star", "planet", "moon", "comet", "asteroid"), 0, "astro"),
]


@pytest.mark.parametrize("which", ["llama_dir", "gpt2_dir"])
@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_shared_prefix_scores_equal_per_choice_scores(which, batch_size, request):
    """Encoding each question once (KV cache, padded contexts and answers) changes no score."""
    model, tok = _load(request.getfixturevalue(which))
    scorings = ["loglik", "loglik_norm", "letter"]
    shared = score_questions(model, tok, MIXED, scorings, batch_size=batch_size, shared_prefix=True)
    naive = score_questions(model, tok, MIXED, scorings, batch_size=batch_size, shared_prefix=False)
    for a, b in zip(shared, naive, strict=True):
        assert a.n_tokens == b.n_tokens
        for s in scorings:
            assert a.scores[s] == pytest.approx(b.scores[s], abs=1e-4, rel=1e-5)


def test_shared_prefix_falls_back_when_too_long(llama_dir):
    """A question longer than max_length is scored per choice (left-truncated), like the naive path."""
    model, tok = _load(llama_dir)
    shared = score_questions(model, tok, THREE, ["loglik"], batch_size=4, max_length=30, shared_prefix=True)
    naive = score_questions(model, tok, THREE, ["loglik"], batch_size=4, max_length=30, shared_prefix=False)
    for a, b in zip(shared, naive, strict=True):
        assert a.scores["loglik"] == pytest.approx(b.scores["loglik"], abs=1e-4, rel=1e-5)
