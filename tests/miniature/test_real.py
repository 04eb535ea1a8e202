"""Opt-in (``-m real``): the SmolLM2 pipeline on the real assets (after `rna assets fetch smollm2 mmlu
wikipedia`): a 2-step RMU+RNA run, evaluated and audited on 8 sampled questions (a few minutes on CPU)."""

from __future__ import annotations

import pytest

from rna_theory.errors import RNAError

pytestmark = pytest.mark.real


def test_smollm2_rmu_with_rna_end_to_end(tmp_path) -> None:
    from rna_train.studies.assets import require
    from rna_train.studies.smollm2 import RealSchedule, run_variant, summarize

    try:
        for name in ("smollm2", "mmlu", "wikipedia"):
            require(name)
    except RNAError as exc:
        pytest.skip(str(exc))
    schedule = RealSchedule(steps=2, batch_size=2, sample=8, eval_batch_size=8)
    row = run_variant(tmp_path, "rmu-target-0.1rms", 0, schedule=schedule)
    assert 0.0 <= row["retain"] <= 1.0 and row["n_questions"] == 8
    assert row["predicted_first_order_trigger"] is not None and row["eta_trigger"] > 0
    table, report = summarize(tmp_path)
    assert "rmu-target-0.1rms" in table and (report / "report.html").is_file()
