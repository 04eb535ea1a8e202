"""Keyword fragility on text: identical scored suffixes, deterministic mining, cached == plain scoring,
intervals that cover a known difference, and the `rna eval --text` command end to end."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from rna_theory.errors import RNAError

TOPIC = ["enzyme", "protein", "ribosome", "mitochondria", "chlorophyll", "membrane", "nucleotide", "bacteria",
         "genome", "antibody", "photosynthesis", "cytoplasm"]
OTHER = ["railway", "parliament", "symphony", "harbour", "election", "cathedral", "football", "novelist",
         "treaty", "mountain", "currency", "festival", "painter", "bridge", "kingdom", "village"]
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from", "that", "which"]


def _corpus(words: list[str], n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        doc = [rng.choice(FILLER) if rng.random() < 0.6 else rng.choice(words) for _ in range(120)]
        docs.append(" ".join(doc).capitalize() + ".")
    return docs


@pytest.fixture(scope="module")
def corpora() -> tuple[list[str], list[str]]:
    """Synthetic forget (topic words) and retain (other words) corpora."""
    return _corpus(TOPIC + OTHER[:2], 30, 1), _corpus(OTHER, 60, 2)


@pytest.fixture(scope="module")
def tiny(llama_dir):
    """The tiny Llama in float64 with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(llama_dir, torch_dtype=torch.float64).eval()
    return model, AutoTokenizer.from_pretrained(llama_dir)


def _record_calls(monkeypatch, name: str) -> list:
    """Wrap ``rna_train.eval.tokenscores.<name>`` so every call's ``groups`` argument is recorded."""
    from rna_train.eval import tokenscores

    calls: list = []
    real = getattr(tokenscores, name)

    def spy(model, groups, **kw):
        calls.append(groups)
        return real(model, groups, **kw)

    monkeypatch.setattr(tokenscores, name, spy)
    return calls


def test_scored_suffix_identical_across_conditions(tiny, corpora, monkeypatch):
    """Every condition of a chunk ends with the same suffix ids, and those ids are the suffix text's."""
    from rna_train.eval import fragility
    from rna_train.eval.fragility import TextSpec, build_items, score_cells

    model, tok = tiny
    spec = TextSpec(n_chunks=6, suffix_tokens=10, head_tokens=4, keywords_per_chunk=3, n_boot=50)
    items = build_items(corpora[1], tok, spec)
    calls = _record_calls(monkeypatch, "shared_prefix_scores")
    groups = {"forget": TOPIC[:5], "control": OTHER[:5]}
    score_cells(model, tok, items, groups, spec)
    seen = [g for call in calls for g in call]
    assert len(calls) == len(items) and len(seen) == len(items)
    kw_ids = fragility.keyword_ids(tok, TOPIC[:5] + OTHER[:5])
    for item, (ctx, conts) in zip(items, seen):
        assert tuple(ctx) == item.prefix_ids
        assert tuple(conts[0]) == item.suffix_ids
        assert len(conts) == 1 + 2 * spec.keywords_per_chunk
        for cont in conts[1:]:
            assert tuple(cont[-spec.suffix_tokens:]) == item.suffix_ids
            assert list(cont[:-spec.suffix_tokens]) in kw_ids
        words = corpora[1][item.doc].split()
        text_ids = tok(" " + " ".join(words[item.position:]), add_special_tokens=False)["input_ids"]
        assert tuple(text_ids[:spec.suffix_tokens]) == item.suffix_ids


def test_mined_keywords_deterministic_and_on_topic(corpora, tokenizer_dir):
    """Same corpora (in any document order) -> the same three lists; planted topic words come first."""
    from transformers import AutoTokenizer

    from rna_train.eval.mining import PAPER_KEYWORD, mine_keywords

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    forget, retain = corpora
    first = mine_keywords(forget, retain, n=8, tokenizer=tok, on_topic=["virus", "enzyme"])
    again = mine_keywords(list(reversed(forget)), retain[::-1], n=8, tokenizer=tok, on_topic=["virus", "enzyme"])
    assert first.groups == again.groups and first.to_dict() == again.to_dict()
    assert set(first.groups["forget"]) <= {w.capitalize() for w in TOPIC} | set(TOPIC)
    assert first.groups["on_topic"] == [PAPER_KEYWORD, "virus"]
    assert len(first.groups["control"]) == 8
    assert not {w.lower() for w in first.groups["control"]} & {w.lower() for w in TOPIC + OTHER[:2]}


def test_mining_error_names_the_fix(corpora):
    """Too few distinctive words: a specific error, not a short list."""
    from rna_train.eval.mining import mine_keywords

    with pytest.raises(RNAError, match="forget words occur"):
        mine_keywords(*corpora, n=200)


@pytest.mark.parametrize("layer", [None, 1])
def test_shared_prefix_equals_plain_scoring(tiny, layer):
    """KV-cached scoring gives the same log-probs, top-1 hits and hidden states as full forwards."""
    from rna_train.eval.tokenscores import plain_scores, shared_prefix_scores

    model, _ = tiny
    rng = np.random.default_rng(0)
    groups = [(rng.integers(3, 300, size=n_ctx).tolist(), [rng.integers(3, 300, size=m).tolist() for m in lens])
              for n_ctx, lens in ((7, (5, 9, 1, 12)), (1, (3, 3)), (20, (8, 2, 6, 6, 4)))]
    plain = plain_scores(model, groups, layer=layer, batch_size=3, pad_id=1)
    cached = shared_prefix_scores(model, groups, layer=layer, batch_size=2, pad_id=1)
    for p_group, c_group in zip(plain, cached):
        for p, c in zip(p_group, c_group):
            np.testing.assert_allclose(c.logprobs, p.logprobs, rtol=0, atol=1e-10)
            np.testing.assert_array_equal(c.top1, p.top1)
            np.testing.assert_array_equal(c.pred, p.pred)
            np.testing.assert_allclose(c.margin, p.margin, rtol=0, atol=1e-8)
            assert (c.margin >= 0).all()
            if layer is None:
                assert p.hidden is None and c.hidden is None
            else:
                np.testing.assert_allclose(c.hidden, p.hidden, rtol=1e-6, atol=1e-7)  # stored as float32


def _crossed(rng: np.random.Generator, shift: float, n_chunks: int = 24, n_words: int = 12) -> np.ndarray:
    """Cells = shift + chunk effect + keyword effect + noise, a quarter of them missing."""
    cells = (shift + rng.normal(0, 1.0, (n_chunks, 1)) + rng.normal(0, 1.0, (1, n_words))
             + rng.normal(0, 0.5, (n_chunks, n_words)))
    cells[rng.random(cells.shape) < 0.25] = np.nan
    return cells


def test_paired_bootstrap_covers_a_known_difference():
    """Paired cells (model - baseline) share the chunk and keyword effects: the interval is tight and
    covers the planted difference; an interval over chunks alone is narrower than the crossed one."""
    from rna_train.eval.bootstrap import crossed_bootstrap

    rng = np.random.default_rng(3)
    base = _crossed(rng, 0.3)
    model = base + 0.8 + rng.normal(0, 0.05, base.shape)
    diff = crossed_bootstrap(model - base, axes=("chunk", "keyword"), seed=1)
    assert diff.low < 0.8 < diff.high and diff.high - diff.low < 0.1
    assert diff.resampled == ("chunk", "keyword") and diff.n == int((~np.isnan(base)).sum())
    chunk_only = np.nanmean(base, axis=1)
    assert (crossed_bootstrap(chunk_only, seed=1).high - crossed_bootstrap(chunk_only, seed=1).low
            < crossed_bootstrap(base, seed=1).high - crossed_bootstrap(base, seed=1).low)


def test_crossed_bootstrap_coverage():
    """Over 200 synthetic crossed designs with chunk AND keyword variance the 95 % interval covers the
    true mean at a rate consistent with >= 0.88 (false-failure rate < 1e-6 at that rate)."""
    from scipy.stats import binom

    from rna_train.eval.bootstrap import crossed_bootstrap

    rng = np.random.default_rng(7)
    trials = 200
    hits = sum(bool((iv := crossed_bootstrap(_crossed(rng, 1.5), n_boot=400, seed=t)).low < 1.5 < iv.high)
               for t in range(trials))
    floor = int(binom.ppf(1e-6, trials, 0.88))
    assert hits >= floor, f"coverage {hits}/{trials} below {floor}"


def test_single_level_axis_is_not_resampled():
    """One seed: the seed axis is reported as not resampled, and the interval equals the 2-axis one."""
    from rna_train.eval.bootstrap import crossed_bootstrap

    cells = _crossed(np.random.default_rng(0), 0.0)
    one = crossed_bootstrap(cells[None], axes=("seed", "chunk", "keyword"), seed=2)
    two = crossed_bootstrap(cells, axes=("chunk", "keyword"), seed=2)
    assert one.resampled == ("chunk", "keyword")
    assert math.isclose(one.low, two.low) and math.isclose(one.high, two.high)


@pytest.fixture(scope="module")
def text_files(tmp_path_factory, corpora):
    """Forget / retain / held-out JSONL files."""
    folder = tmp_path_factory.mktemp("text")
    paths = {}
    for name, docs in (("forget", corpora[0]), ("retain", corpora[1][:40]), ("heldout", corpora[1][40:])):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return paths


def test_eval_text_cli_end_to_end(llama_dir, llama2_dir, text_files, tmp_path):
    """Base run with mined groups, then a second model against it: paired excess in fragility.json."""
    from rna_train.cli import main

    common = ["eval", "--text", str(text_files["heldout"]), "--chunks", "8", "--suffix-tokens", "12",
              "--head-tokens", "4", "--keywords-per-chunk", "3", "--layer", "1"]
    assert main([*common, "--model", str(llama_dir), "--forget-corpus", str(text_files["forget"]),
                 "--retain-corpus", str(text_files["retain"]), "--n-keywords", "6", "--out",
                 str(tmp_path / "base")]) == 0
    doc = json.loads((tmp_path / "base" / "fragility.json").read_text())
    assert set(doc["groups"]) == {"forget", "on_topic", "control"}
    assert (tmp_path / "base" / "keywords" / "forget.txt").read_text().split("\n")[:6] == doc["groups"]["forget"]
    with np.load(tmp_path / "base" / "latents-forget.npz") as z:
        assert z["clean"].shape == z["perturbed"].shape and z["margins"].size == 8 * 4  # chunks x head tokens
    unchanged = doc["summary"]["unchanged"]["head"]["control"]
    assert 0.0 <= unchanged["low"] <= unchanged["mean"] <= unchanged["high"] <= 1.0
    assert main(["tune", "--latents", str(tmp_path / "base" / "latents-forget.npz"), "--json"]) == 0
    groups = [f"{g}={tmp_path / 'base' / 'keywords' / (g + '.txt')}" for g in ("forget", "on_topic", "control")]
    assert main([*common, "--model", str(llama2_dir), *[a for g in groups for a in ("--group", g)],
                 "--baseline", str(tmp_path / "base"), "--out", str(tmp_path / "other")]) == 0
    other = json.loads((tmp_path / "other" / "fragility.json").read_text())["summary"]
    for group in ("forget", "on_topic", "control"):
        ex = other["excess"]["nll"][group]
        assert ex["low"] <= ex["mean"] <= ex["high"]
        assert ex["resampled"] == ["chunk", "keyword"]
    assert len(other["keywords"]) == 6 + len(doc["groups"]["on_topic"]) + 6


@pytest.mark.parametrize("extra, message", [
    ([], "exactly one of --probe"),
    (["--probe", "p.jsonl", "--text", "t.jsonl"], "exactly one of --probe"),
    (["--text", "{heldout}", "--group", "nonsense"], "not NAME=LIST"),
    (["--text", "{heldout}", "--group", "a=control", "--baseline", "{tmp}"], "no cells.npz"),
    (["--text", "{heldout}", "--group", "a=control", "--suffix-tokens", "4", "--head-tokens", "8"],
     "head_tokens 8 >= suffix_tokens 4"),
])
def test_eval_text_errors(llama_dir, text_files, tmp_path, capsys, extra, message):
    """Wrong combinations fail with exit status 2 and one line naming the flag to fix."""
    from rna_train.cli import main

    args = [a.format(heldout=text_files["heldout"], tmp=tmp_path) for a in extra]
    assert main(["eval", "--model", str(llama_dir), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_baseline_of_other_cells_is_refused(llama_dir, text_files, tmp_path, capsys):
    """A baseline scored on other chunks would pair unrelated cells: refused, nothing written."""
    from rna_train.cli import main

    base = ["eval", "--model", str(llama_dir), "--text", str(text_files["heldout"]), "--group", "a=control",
            "--chunks", "4", "--suffix-tokens", "8", "--head-tokens", "4", "--keywords-per-chunk", "2"]
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert main([*base, "--seed", "1", "--baseline", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert "other chunks" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_answer_form_scores_the_same_answer_ids_and_pairs_exactly(tiny, monkeypatch):
    """Question form: every condition scores the clean context's answer ids; a model paired with itself
    has zero excess; the keyword is inside the question, never in the scored answer."""
    from rna_train.eval.answerform import insert_word, score_answers, summarize_answers
    from rna_train.eval.fragility import TextSpec
    from rna_train.eval.probes import Question

    model, tok = tiny
    questions = [Question(f"Which {w} was built first in the old town", ("a bridge", "the railway", "x", "y"), i % 2)
                 for i, w in enumerate(OTHER[:5])]
    seen = _record_calls(monkeypatch, "plain_scores")
    spec = TextSpec(keywords_per_chunk=2, n_boot=100, batch_size=4)
    cells = score_answers(model, tok, questions, {"forget": TOPIC[:4], "control": OTHER[8:12]}, spec)
    assert len(seen) == 5
    for groups in seen:
        assert len(groups) == 1 + 2 * 2 and len({tuple(g[1][0]) for g in groups}) == 1
        assert len({tuple(g[0]) for g in groups}) == len(groups)
    assert "enzyme" in insert_word("What is the capital of France", "enzyme", 0, 3).split()
    summary = summarize_answers(cells, spec, baseline=cells)
    assert all(e["mean"] == 0.0 for e in summary["excess"].values())
    assert (~np.isnan(cells.perturbed)).sum(axis=1).tolist() == [4] * 5
