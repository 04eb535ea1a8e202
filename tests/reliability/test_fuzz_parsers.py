"""Fuzzing the user-facing parsers: every input is accepted or rejected with RNAError, nothing else."""

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rna_theory import NoiseSchedule, RNAError
from rna_train.config import load_config, parse_override
from rna_train.data import read_texts
from rna_train.eval.keywords import parse_keywords, resolve_keywords
from rna_train.eval.probes import load_probe

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=12))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3)), max_leaves=8)
config_keys = st.sampled_from(["method", "model", "data", "rna", "train", "output_dir", "seed", "methd",
                               "rna.noise", "train.lr", "train.steps", "method.layer", "method.name", "x"])


def _accept_or_rnaerror(fn, *args):
    """Run ``fn``: returning or raising RNAError are both fine; any other exception fails the test."""
    with contextlib.suppress(RNAError):
        fn(*args)


@FUZZ
@given(st.text(max_size=300))
def test_config_yaml_text(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    _accept_or_rnaerror(load_config, path, ())


@FUZZ
@given(st.dictionaries(config_keys, yaml_values, max_size=6))
def test_config_structures(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(data, default=str), encoding="utf-8")  # JSON is YAML
    _accept_or_rnaerror(load_config, path, ())


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
def test_config_overrides(tmp_path, overrides):
    base = tmp_path / "c.yaml"
    base.write_text("method: {name: rmu, layer: 1}\n", encoding="utf-8")
    _accept_or_rnaerror(load_config, base, overrides)
    for item in overrides:
        _accept_or_rnaerror(parse_override, item)


@FUZZ
@given(st.one_of(yaml_values, st.floats()))
def test_noise_schedule_from_anything(value):
    _accept_or_rnaerror(NoiseSchedule.from_dict, value)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["jsonl", "txt", "json"]))
def test_corpus_files(tmp_path, blob, suffix):
    path = tmp_path / f"corpus.{suffix}"
    path.write_bytes(blob)
    _accept_or_rnaerror(read_texts, path, "text")


@FUZZ
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["question", "choices", "answer", "subject", "topic",
                                                           "answer_a", "correct_answer"]), yaml_values, max_size=5),
                          yaml_values), max_size=4))
def test_probe_files(tmp_path, rows):
    path = tmp_path / "probe.jsonl"
    path.write_text("\n".join(json.dumps(r, default=str) for r in rows), encoding="utf-8")
    _accept_or_rnaerror(load_probe, path)


@FUZZ
@given(st.binary(max_size=300))
def test_probe_bytes(tmp_path, blob):
    path = tmp_path / "probe.jsonl"
    path.write_bytes(blob)
    _accept_or_rnaerror(load_probe, path)


@FUZZ
@given(st.text(max_size=200))
def test_keyword_lists(text):
    _accept_or_rnaerror(parse_keywords, text, "keywords.txt")


def test_malformed_examples_name_the_place(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": \n')
    with pytest.raises(RNAError, match=r"c.jsonl:2"):
        read_texts(bad, "text")
    latin = tmp_path / "l.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(RNAError, match=r"l\.txt: not UTF-8"):
        read_texts(latin, "text")
    probe = tmp_path / "p.jsonl"
    probe.write_bytes(b'{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": "caf\xe9"}\n')
    with pytest.raises(RNAError, match=r"p\.jsonl:2: not UTF-8"):
        load_probe(probe)
    words = tmp_path / "k.txt"
    words.write_bytes(b"anthrax\n\xff\xfe\n")
    with pytest.raises(RNAError, match="not UTF-8"):
        resolve_keywords(str(words))
