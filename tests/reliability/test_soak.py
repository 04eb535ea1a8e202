"""Short soak (opt-in, -m slow): memory stays flat over a few hundred steps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_memory_stays_flat(tmp_path):
    spec = importlib.util.spec_from_file_location("soak", REPO / "experiments" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.soak(400, tmp_path)
    assert result["rss_growth_mib_after_first_window"] is not None
    assert result["rss_growth_mib_after_first_window"] < 64  # a leak of graphs or metrics grows far faster
