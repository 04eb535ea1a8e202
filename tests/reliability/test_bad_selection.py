"""Layer and parameter selections that select nothing (or nothing that exists) fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import train_helpers as helpers
import yaml

from rna_theory import RNAError
from rna_train.config import load_config
from rna_train.trainer import train


@pytest.mark.parametrize(("override", "message"), [
    ("model.trainable.layers=[99]", "out of range for a 4-layer model"),
    ("model.trainable.layers=[-1]", "out of range"),
    ("model.trainable.layers=[]", "no layers selected"),
    ("model.trainable.patterns=[]", "empty pattern list"),
    ("model.trainable.patterns=[attn.nothing]", "match nothing"),
])
def test_selection_matching_nothing_is_rejected_before_work(override: str, message: str, tmp_path: Path,
                                                             assets: dict[str, Path]) -> None:
    out = tmp_path / "out"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(helpers.run_config(assets["tokenizer"], assets, out, steps=2)))
    with pytest.raises(RNAError, match=message) as exc:
        cfg, options = load_config(path, [override])
        train(cfg, options)
    assert exc.value.where.startswith("model.trainable")
    assert not out.exists()
