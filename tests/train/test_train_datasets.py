"""Corpora through ``datasets.load_dataset``: local folders of data files, CSV, streaming, Hub ids offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import train_helpers as helpers
import yaml

from rna_theory.errors import RNAError
from rna_train.config import load_config
from rna_train.data import read_texts
from rna_train.trainer import train

TEXTS = [f"the virus {i} was in the cell" for i in range(12)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of two JSONL data files with a train and a test split (no save_to_disk metadata)."""
    root = tmp_path / "corpus"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS[:8]))
    (root / "data" / "test.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS[8:]))
    return root


def test_folder_of_data_files_reads_through_load_dataset(folder: Path) -> None:
    assert read_texts(folder, "body") == TEXTS[:8]
    assert read_texts(folder, "body", split="test") == TEXTS[8:]
    assert read_texts(folder, "body", fmt="hub", limit=3) == TEXTS[:3]


def test_streaming_reads_only_the_limit_and_needs_one(folder: Path) -> None:
    assert read_texts(folder, "body", streaming=True, limit=5) == TEXTS[:5]
    with pytest.raises(RNAError, match="streaming reads the first"):
        read_texts(folder, "body", streaming=True)


def test_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS[:4])))
    assert read_texts(path) == TEXTS[:4]


def test_bad_column_split_and_offline_hub_id_are_clear(folder: Path) -> None:
    with pytest.raises(RNAError, match=r"missing text field 'text' \(columns: \['body'\]\)"):
        read_texts(folder)
    with pytest.raises(RNAError, match="split 'validation'"):
        read_texts(folder, "body", split="validation")
    code = ("from rna_train.data import read_texts\nfrom rna_theory.errors import RNAError\n"
            "try:\n    read_texts('someone/no-such-corpus')\nexcept RNAError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                              "HOME": str(folder)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "could not read 'someone/no-such-corpus'" in res.stdout and "HF_DATASETS_OFFLINE" in res.stdout


def test_a_run_trains_on_a_dataset_folder(folder: Path, assets: dict[str, Path], tmp_path: Path) -> None:
    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out", steps=2)
    raw["data"]["forget"][0].update({"path": str(folder), "text_field": "body", "streaming": True, "limit": 6})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    result = train(*load_config(tmp_path / "c.yaml"))
    assert len(result.metrics) == 2
