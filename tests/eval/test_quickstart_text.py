"""`rna quickstart`'s pipeline end to end on a tiny model and a synthetic "Wikipedia" (no downloads):
assets found in the cache, data split and keywords mined, base + two unlearned variants evaluated,
the table with effects and excess intervals, the figure and the HTML report."""

from __future__ import annotations

import json
import random
import shutil

import pytest

TOPIC = [f"bioword{c}{d}" for c in "abcdefgh" for d in "xyzw"][:36]
OTHER = [f"civic{c}{d}" for c in "abcdefghij" for d in "xyzw"][:40]
FILLER = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from"]


def _docs(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(FILLER) if rng.random() < 0.5 else rng.choice(words) for _ in range(110))
            for _ in range(n)]


@pytest.fixture
def fake_cache(tmp_path, llama_dir, monkeypatch):
    """An asset cache holding a tiny Llama as "smollm2" and synthetic forget/retain text as "wikipedia"."""
    root = tmp_path / "cache"
    shutil.copytree(llama_dir, root / "assets" / "smollm2-135m-instruct")
    wiki = root / "assets" / "wikipedia"
    wiki.mkdir(parents=True)
    for name, docs in (("forget", _docs(TOPIC, 60, 1)), ("retain", _docs(OTHER, 120, 2))):
        (wiki / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    monkeypatch.setenv("RNA_CACHE_DIR", str(root))
    return root


def test_quickstart_prints_effects_and_excess_with_intervals(fake_cache, tmp_path):
    from rna_train.studies.quickstart_text import run_quickstart

    out = tmp_path / "qs"
    table, folder = run_quickstart(out, steps=3, overrides=[
        "methods.rmu.method.layer=1", "methods.rmu.method.steering_coef=20.0", "eval.layer=1",
        "eval.n_chunks=6", "eval.keywords_per_chunk=3", "eval.n_boot=200", "variants.rmu-rna.rna_layer=0"])
    lines = table.splitlines()
    assert lines[0].startswith("| model | forget NLL | retain NLL | effect forget | effect on_topic | effect control")
    assert "excess forget over base" in lines[0] and "excess control over base" in lines[0]
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"base", "rmu", "rmu-rna"}
    assert rows["rmu"].count("[") == 6 and rows["base"].count("[") == 3
    doc = json.loads((out / "quickstart.json").read_text())
    for row in doc[1:]:
        for group in ("forget", "on_topic", "control"):
            iv = row["excess"][group]
            assert iv["low"] <= iv["mean"] <= iv["high"] and iv["resampled"] == ["chunk", "keyword"]
    assert (folder / "effect.png").stat().st_size > 1000
    page = (folder / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    mined = (out / "data" / "keywords" / "forget.txt").read_text().split()
    assert len(mined) == 30 and set(mined) <= set(TOPIC)


def test_quickstart_command_miniature_flag_is_separate(fake_cache):
    """The miniature options live in their own group; --threads is validated before any work."""
    from rna_train.cli import main

    assert main(["quickstart", "--threads", "0"]) == 2
