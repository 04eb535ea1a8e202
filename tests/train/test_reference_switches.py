"""Config switches that reproduce the reference code's data handling (issue 13, item 11)."""

from __future__ import annotations

import types
from pathlib import Path

import train_helpers as helpers
import yaml

from rna_train.config import load_config
from rna_train.trainer import _step_indices


class _Corpus:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n


def _prep(order: str) -> types.SimpleNamespace:
    raw = {"model": {"name_or_path": "x"}, "data": {"forget": [{"name": "bio", "path": ["b"]},
                                                             {"name": "cyber", "path": ["c"]}],
                                                  "retain": {"path": ["r"]}, "retain_order": order}}
    cfg, _ = load_config(raw)
    return types.SimpleNamespace(cfg=cfg, forget=[_Corpus("bio", 40), _Corpus("cyber", 40)],
                                 retain=_Corpus("retain", 400))


def test_retain_batches_per_step_or_per_cycle_of_topics() -> None:
    per_step = [_step_indices(_prep("per_step"), s)[2] for s in range(4)]
    per_cycle = [_step_indices(_prep("per_topic_cycle"), s)[2] for s in range(4)]
    assert per_step[0] != per_step[1]
    assert per_cycle[0] == per_cycle[1] != per_cycle[2] == per_cycle[3]  # one retain batch per cycle (bio, cyber)
    assert per_cycle[0] == per_step[0] and per_cycle[2] == per_step[1]


def test_a_topic_may_keep_longer_documents(tmp_path: Path, assets: dict[str, Path]) -> None:
    from rna_train.trainer import _load_data

    raw = helpers.run_config(assets["tokenizer"], assets, tmp_path / "out")
    raw["data"]["max_length"] = 4
    raw["data"]["forget"].append({**raw["data"]["forget"][0], "name": "long", "max_length": 12})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, _ = load_config(tmp_path / "c.yaml")
    from rna_train.models import load_tokenizer

    forget, retain = _load_data(cfg, load_tokenizer(str(assets["tokenizer"])), True)
    assert max(len(s) for s in forget[0].sequences) <= 4 < max(len(s) for s in forget[1].sequences) <= 12
    assert retain is not None and max(len(s) for s in retain.sequences) <= 4
