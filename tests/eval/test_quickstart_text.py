"""`rna quickstart`'s pipeline end to end on a tiny model and a synthetic "Wikipedia" (no downloads):
assets found in the cache, data split and keywords mined, base + two unlearned variants evaluated,
the table with effects and excess intervals, the figure and the HTML report."""

from __future__ import annotations

import json

from eval_helpers import WIKI_TOPIC


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
    assert len(mined) == 30 and set(mined) <= set(WIKI_TOPIC)


def test_quickstart_command_miniature_flag_is_separate(fake_cache):
    """The miniature options live in their own group; --threads is validated before any work."""
    from rna_train.cli import main

    assert main(["quickstart", "--threads", "0"]) == 2
