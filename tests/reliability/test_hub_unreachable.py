"""A Hub id on a machine that cannot reach the Hub: one clear error at once (not a minute of retries),
or, when the files are cached, a load from the cache only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rna_theory.errors import RNAError
from rna_train import models


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)


def test_uncached_hub_id_fails_at_once_naming_the_fix(unreachable: None) -> None:
    start = time.perf_counter()
    with pytest.raises(RNAError, match="not reachable") as info:
        models.load_model("SomeOrg/SomeModel")
    assert time.perf_counter() - start < 5
    assert info.value.where == "model.name_or_path" and "download it" in info.value.fix


def test_cached_hub_id_is_read_from_the_cache_only(unreachable: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: "/cache/config.json" if name == "config.json" else None)
    assert models.cache_only("SomeOrg/SomeModel", ["config.json"], "model.name_or_path") is True
    with pytest.raises(RNAError, match="neither a local folder"):
        models.cache_only("SomeOrg/SomeModel", ["tokenizer.json"], "model.tokenizer")


def test_local_folders_and_a_reachable_hub_need_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)
    assert models.cache_only("SomeOrg/SomeModel", ["config.json"], "model.name_or_path") is False
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: pytest.fail("no probe for a folder"))
    assert models.cache_only(str(tmp_path), ["config.json"], "model.name_or_path") is False
