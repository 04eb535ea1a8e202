"""Forget and retain corpora: reading, tokenising, deterministic batching and padding.

Corpora come from local JSONL / JSON / Parquet / CSV / text files, ``datasets`` folders saved with
``save_to_disk``, or anything ``datasets.load_dataset`` reads (Hub ids, folders of data files);
every problem (unreadable line, missing text field, nothing left after length filtering) is an
:class:`RNAError` raised while loading, before any training step.

Batches are chosen by a pure function of ``(seed, corpus, step)``: a run resumed from a checkpoint
or split over several processes sees exactly the samples an uninterrupted single-process run sees.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)

FORMATS = ("auto", "jsonl", "json", "parquet", "text", "disk", "csv", "hub")
TRUNCATION_SIDES = ("right", "left")


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        saved = any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
        return "disk" if saved else "hub"
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
            ".txt": "text", ".text": "text", ".md": "text"}.get(suffix, "text")


def _looks_like_hub_id(path: str | Path) -> bool:
    """``owner/name`` with no file suffix: a Hub dataset id rather than a missing local file."""
    parts = str(path).split("/")
    return len(parts) == 2 and all(parts) and not Path(parts[1]).suffix and not str(path).startswith(".")


def _field(record: Any, field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise RNAError(f"expected a JSON object, got {type(record).__name__}", where=where,
                       fix="write one JSON object per line")
    if field not in record:
        raise RNAError(f"missing text field {field!r} (keys: {sorted(record)})", where=where,
                       fix="set text_field to the key that holds the text")
    value = record[field]
    if not isinstance(value, str):
        raise RNAError(f"text field {field!r} is a {type(value).__name__}, not a string", where=where,
                       fix="point text_field at a string-valued key")
    return value


_UTF8_FIX = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a file, decoding each line as UTF-8; bad bytes name ``file:line``."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RNAError(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)",
                               where=f"{path}:{lineno}", fix=_UTF8_FIX) from None


def utf8_text(path: Path) -> str:
    """The whole file decoded as UTF-8, with an RNAError (not a traceback) on bad bytes."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RNAError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path), fix=_UTF8_FIX) from None


def read_texts(path: str | Path, text_field: str = "text", *, fmt: str = "auto", split: str | None = None,
               subset: str | None = None, streaming: bool = False, limit: int | None = None) -> list[str]:
    """Read the documents of one file, saved dataset or ``datasets`` source as strings.

    Formats: ``jsonl`` (one object per line; errors name ``file:line``), ``json`` (a list of
    objects), ``parquet``, ``text`` (one document per non-empty line), ``disk`` (a folder written
    by ``datasets.save_to_disk``; ``split`` picks from a ``DatasetDict``, default ``train``),
    ``csv`` and ``hub`` (:func:`read_dataset`: a Hub id or a local folder of data files through
    ``datasets.load_dataset``). ``auto`` picks by suffix; a folder without ``save_to_disk``
    metadata and a path that does not exist but looks like ``owner/name`` are ``hub``.
    """
    if fmt not in FORMATS:
        raise RNAError(f"unknown format {fmt!r}", where=str(path), fix=f"use one of {', '.join(FORMATS)}")
    source, path = str(path), Path(path)
    missing = not path.exists()
    kind = "hub" if fmt == "auto" and missing and _looks_like_hub_id(source) else _format_of(path, fmt)
    if kind in ("hub", "csv"):
        return read_dataset(source, text_field, split=split, subset=subset, streaming=streaming, limit=limit,
                            builder="csv" if kind == "csv" else None)
    if missing:
        raise RNAError("file not found", where=str(path), fix="check the corpus path")
    return _READERS[kind](path, text_field, split)


def _read_jsonl(path: Path, text_field: str, _split: str | None) -> list[str]:
    texts = []
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RNAError(f"malformed JSON ({exc.msg} at column {exc.colno})", where=where,
                           fix="write one valid JSON object per line") from None
        texts.append(_field(record, text_field, where))
    return texts


def _read_json(path: Path, text_field: str, _split: str | None) -> list[str]:
    try:
        records = json.loads(utf8_text(path))
    except json.JSONDecodeError as exc:
        raise RNAError(f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}",
                       fix="write a JSON list of objects (or use .jsonl)") from None
    if not isinstance(records, list):
        raise RNAError("expected a JSON list of objects", where=str(path), fix="wrap the records in [...]")
    return [_field(r, text_field, f"{path}[{i}]") for i, r in enumerate(records)]


def _read_text(path: Path, _field_name: str, _split: str | None) -> list[str]:
    return [line.rstrip("\n") for line in utf8_text(path).splitlines() if line.strip()]


def _read_parquet(path: Path, text_field: str, _split: str | None) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if text_field not in names:
        raise RNAError(f"missing text field {text_field!r} (columns: {names})", where=str(path),
                       fix="set text_field to a string column")
    column = pq.read_table(path, columns=[text_field]).column(text_field).to_pylist()
    return [_check_str(v, text_field, f"{path}[{i}]") for i, v in enumerate(column)]


def _read_disk(path: Path, text_field: str, split: str | None) -> list[str]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise RNAError(f"not a dataset saved with save_to_disk: {exc}", where=str(path),
                       fix="pass a .jsonl/.json/.parquet/.txt file or a save_to_disk folder") from None
    if isinstance(ds, datasets.DatasetDict):
        name = split or "train"
        if name not in ds:
            raise RNAError(f"no split {name!r} (splits: {list(ds)})", where=str(path), fix="set split")
        ds = ds[name]
    if text_field not in ds.column_names:
        raise RNAError(f"missing text field {text_field!r} (columns: {ds.column_names})", where=str(path),
                       fix="set text_field to a string column")
    return [_check_str(v, text_field, f"{path}[{i}]") for i, v in enumerate(ds[text_field])]


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "text": _read_text, "parquet": _read_parquet,
            "disk": _read_disk}


def read_dataset(source: str, text_field: str = "text", *, split: str | None = None, subset: str | None = None,
                 streaming: bool = False, limit: int | None = None, builder: str | None = None) -> list[str]:
    """Documents through ``datasets.load_dataset``: a Hub id, a local folder of data files, or a CSV file.

    ``split`` defaults to ``train``; ``subset`` is the dataset's configuration name. ``streaming``
    reads only the first ``limit`` documents (required then) instead of downloading the corpus.
    Offline, datasets uses its cache (``HF_DATASETS_OFFLINE=1``); a failure names the source.
    """
    import datasets

    if streaming and limit is None:
        raise RNAError("streaming reads the first `limit` documents, and no limit is set", where=source,
                       fix="set the corpus' limit (e.g. limit: 10000), or streaming: false")
    name = split or "train"
    kwargs: dict[str, Any] = {"split": name, "streaming": streaming}
    if subset:
        kwargs["name"] = subset
    if builder:
        kwargs["data_files"] = source
    try:
        ds = datasets.load_dataset(builder or source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RNAError(f"datasets.load_dataset could not read {source!r} (split {name!r}"
                       f"{f', subset {subset!r}' if subset else ''}): {detail}", where=source,
                       fix="check the id or path, subset and split; without network set HF_DATASETS_OFFLINE=1 "
                           "to read the local cache, or pass a local file") from None
    columns = ds.column_names
    if columns is not None and text_field not in columns:
        raise RNAError(f"missing text field {text_field!r} (columns: {columns})", where=source,
                       fix="set text_field to a string column")
    if not streaming:
        ds = ds.select(range(min(limit, len(ds)))) if limit is not None else ds
        return [_check_str(v, text_field, f"{source}[{i}]") for i, v in enumerate(ds[text_field])]
    texts = []
    for i, record in enumerate(ds.take(limit)):
        texts.append(_field(record, text_field, f"{source}[{i}]"))
    return texts


def _check_str(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise RNAError(f"text field {field!r} holds a {type(value).__name__}", where=where,
                       fix="point text_field at a string column")
    return value


def tokenize(texts: Sequence[str], tokenizer: Any, *, max_length: int, min_length: int = 1,
             truncation_side: str = "right") -> list[list[int]]:
    """Token ids per document, cut to ``max_length`` and dropping those under ``min_length``.

    ``truncation_side="right"`` keeps a document's beginning, ``"left"`` its end.
    """
    if truncation_side not in TRUNCATION_SIDES:
        raise RNAError(f"unknown truncation side {truncation_side!r}", where="data.truncation_side",
                       fix="use right or left")
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        if len(ids) > max_length:
            ids = ids[:max_length] if truncation_side == "right" else ids[-max_length:]
        if len(ids) >= min_length:
            out.append(list(ids))
    return out


@dataclasses.dataclass
class Corpus:
    """A tokenised corpus: one list of token ids per document."""

    name: str
    sequences: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.sequences)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` (1 = real token) for ``indices``."""
        return collate([self.sequences[i] for i in indices], self.pad_id)


def collate(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token-id lists to the longest one; the mask marks the real tokens."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def load_corpus(name: str, paths: str | Sequence[str], tokenizer: Any, *, text_field: str = "text",
                fmt: str = "auto", split: str | None = None, max_length: int, min_length: int = 1,
                truncation_side: str = "right", limit: int | None = None, subset: str | None = None,
                streaming: bool = False, where: str = "data") -> Corpus:
    """Read, tokenise and length-filter one corpus; an empty result is an :class:`RNAError`."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not files:
        raise RNAError("no files given", where=f"{where}.path", fix="set path to a file or a list of files")
    texts: list[str] = []
    for f in files:
        texts.extend(t for t in read_texts(f, text_field, fmt=fmt, split=split, subset=subset, streaming=streaming,
                                           limit=limit) if t.strip())
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise RNAError(f"corpus {name!r} is empty", where=f"{where}.path ({', '.join(map(str, files))})",
                       fix="point it at files that contain non-empty documents")
    sequences = tokenize(texts, tokenizer, max_length=max_length, min_length=min_length,
                         truncation_side=truncation_side)
    if not sequences:
        raise RNAError(f"corpus {name!r}: none of {len(texts)} documents has >= {min_length} tokens",
                       where=f"{where}.path", fix="lower data.min_length or add longer documents")
    log.info("corpus %s: %d documents (%d dropped as shorter than %d tokens)", name, len(sequences),
             len(texts) - len(sequences), min_length)
    return Corpus(name=name, sequences=sequences, pad_id=int(tokenizer.pad_token_id))


def stream_id(name: str) -> int:
    """A stable integer for a corpus name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


@functools.lru_cache(maxsize=64)
def _permutation(n: int, seed: int, stream: int, epoch: int, shuffle: bool) -> tuple[int, ...]:
    if not shuffle:
        return tuple(range(n))
    gen = torch.Generator().manual_seed((seed * 1_000_003 + stream * 7919 + epoch) % (2**63))
    return tuple(torch.randperm(n, generator=gen).tolist())


def batch_indices(n: int, batch_size: int, index: int, *, seed: int, stream: int,
                  shuffle: bool = True) -> list[int]:
    """Document indices of the ``index``-th batch of a corpus of ``n`` documents.

    Batches walk through a fresh seeded permutation each epoch, so the result depends only on the
    arguments: resuming and data-parallel sharding need no sampler state.
    """
    out = []
    for pos in range(index * batch_size, (index + 1) * batch_size):
        epoch, k = divmod(pos, n)
        out.append(_permutation(n, seed, stream, epoch, shuffle)[k])
    return out
