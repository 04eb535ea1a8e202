"""The Python API: what the ``rna`` command does, from a notebook, with Python values.

    import rna
    run = rna.unlearn("experiments/configs/tiny_llama_rmu.yaml", output_dir="/tmp/tiny", train__steps=20,
                      overwrite=True)
    run.metrics[-1]["forget"]                         # the losses of the last step
    fragility = rna.evaluate(run.model, run.tokenizer, texts=texts, groups={"forget": [...], "control": [...]})

* :func:`unlearn` trains (``rna unlearn``): a YAML path or a dict, overrides as keyword arguments
  (``train__lr=1e-4`` or ``**{"train.lr": 1e-4}``); returns the model, tokenizer, metrics and folder.
* :func:`evaluate`: keyword fragility on text (``rna eval --text``): per group, the change of the
  next-token NLL and top-1 after one inserted word, with intervals, and the excess over a baseline.
* :func:`audit`: the latent audit on a multiple-choice probe (``rna audit``).
* :func:`tune`: the noise scale from the bounds (``rna tune``), from a latents file or from margins.
* :func:`sweep`: a resumable grid of runs (``rna sweep``): list values are axes, scalars fixed;
  returns the summary (per point, mean and 95 % interval over seeds of the chosen metrics).
* :func:`robustness`: the whole robustness suite (``rna robustness``: held-out text, MMLU clean and
  perturbed, keyword fragility, quantization, relearning, GCG) with its HTML report; resumable.

Models may be given as a folder (loaded once, with its tokenizer) or as a loaded ``(model, tokenizer)``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rna_theory.errors import RNAError

__all__ = ["RNAError", "UnlearnResult", "audit", "evaluate", "robustness", "sweep", "tune", "unlearn"]

log = logging.getLogger(__name__)

#: Files whose presence marks a folder as a run's output (``overwrite=True`` removes only such folders).
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "DONE", "fragility.json", "audit.json")


@dataclasses.dataclass
class UnlearnResult:
    """What :func:`unlearn` returns."""

    model: Any
    tokenizer: Any
    metrics: list[dict[str, Any]]
    output_dir: Path
    config: Any


def _clear(folder: Path) -> None:
    """Remove a previous run's output folder, refusing a folder that is not one."""
    if not folder.exists():
        return
    if not folder.is_dir() or not any((folder / m).exists() for m in RUN_MARKERS):
        raise RNAError("overwrite=True refuses to delete a folder that is not a run's output", where=str(folder),
                       fix=f"choose another output_dir (a run folder holds one of {', '.join(RUN_MARKERS)})")
    log.info("overwrite: removing %s", folder)
    shutil.rmtree(folder)


def unlearn(config: str | Path | Mapping[str, Any], *, overwrite: bool = False, resume: bool = False,
            model: Any = None, tokenizer: Any = None, **overrides: Any) -> UnlearnResult:
    """Train an unlearning run (``rna unlearn``) and return the model, tokenizer, metrics and folder.

    ``config``: a YAML file or a mapping of the same keys. ``overrides``: dotted keys with ``__`` for
    the dots (``train__lr=1e-4``, ``rna__noise__nu=0.03``) or written with dots via ``**{...}``;
    values are Python values. ``overwrite``: delete a previous run's ``output_dir`` first (only a
    folder that holds a run's files). ``model``/``tokenizer``: an already loaded model to unlearn
    (in place) instead of ``config.model``.
    """
    from rna_train.config import RunConfig, load_config, load_raw, set_dotted, shorthands
    from rna_train.trainer import train

    if (model is None) != (tokenizer is None):
        raise RNAError("give both model and tokenizer, or neither", where="rna.unlearn",
                       fix="pass tokenizer= with model= (or load from config.model)")
    raw = load_raw(config)
    expand = shorthands(RunConfig)
    for key, value in overrides.items():
        set_dotted(raw, key.replace("__", "."), value, expand)
    cfg, options = load_config(raw)
    if overwrite and resume:
        raise RNAError("overwrite and resume exclude each other", where="rna.unlearn", fix="pass one of them")
    if overwrite:
        _clear(Path(cfg.output_dir))
    result = train(cfg, options, resume=resume,
                   model_and_tokenizer=(model, tokenizer) if model is not None else None)
    return UnlearnResult(result.model, result.tokenizer, result.metrics, result.output_dir, cfg)


def sweep(config: str | Path | Mapping[str, Any], out: str | Path, *, metrics: Sequence[str] = ("loss",),
          over: str = "seed", last: int = 1, run_folder: str | None = None, shard: str = "0/1",
          **grid: Any) -> dict[str, Any]:
    """Train a grid of runs (``rna sweep``) and return its summary.

    ``grid``: dotted keys with ``__`` for the dots; a list value is an axis
    (``rna__noise__nu=[0.01, 0.03], seed=[0, 1, 2]``), anything else a fixed override. Rerunning with
    the same grid skips finished runs and resumes a started one. ``run_folder`` and ``shard`` are
    ``--run-folder`` and ``--shard``.
    """
    import json

    from rna_train.sweep import RUN_FOLDER, run_sweep, shard_filter

    items = [f"{key.replace('__', '.')}="
             + (",".join(json.dumps(v) for v in value) if isinstance(value, (list, tuple)) else json.dumps(value))
             for key, value in grid.items()]
    return run_sweep(config if isinstance(config, (str, Path)) else dict(config), items, out, metrics=metrics,
                     over=over, last=last, run_folder=run_folder or RUN_FOLDER, only=shard_filter(items, shard))


def _loaded(model: Any, tokenizer: Any, dtype: str = "fp32", device: str | None = None) -> tuple[Any, Any]:
    """A loaded ``(model, tokenizer)`` from a folder / Hub id, or the ones given."""
    if isinstance(model, (str, Path)):
        from rna_train.eval.loading import load_for_eval

        loaded, own = load_for_eval(str(model), dtype, device)
        return loaded, tokenizer or own
    if tokenizer is None:
        raise RNAError("a loaded model needs its tokenizer", where="tokenizer",
                       fix="pass tokenizer=..., or the model's folder instead of the model")
    return model, tokenizer


def evaluate(model: Any, tokenizer: Any = None, *, texts: str | Path | Sequence[str],
             groups: Mapping[str, Sequence[str]], baseline: str | Path | None = None, out: str | Path | None = None,
             overwrite: bool = False, shared_prefix: bool = True, **spec: Any) -> dict[str, Any]:
    """Keyword fragility on text (``rna eval --text``); returns the summary (written to ``out`` if given).

    ``texts``: a corpus file or a list of texts; ``groups``: group name -> keywords (e.g. ``forget``,
    ``control``); ``baseline``: a previous run's folder (same texts and groups) for the paired
    excess; ``spec``: :class:`rna_train.eval.fragility.TextSpec` fields (``n_chunks``,
    ``suffix_tokens``, ``layer``, ...).
    """
    from rna_train.data import read_texts
    from rna_train.eval.fragility import TextSpec
    from rna_train.eval.textrun import evaluate_text, load_baseline, payload, write_run

    text_spec = TextSpec(**spec)
    items = read_texts(Path(texts)) if isinstance(texts, (str, Path)) else list(texts)
    given = {name: list(words) for name, words in groups.items()}
    base = load_baseline(Path(baseline)) if baseline is not None else None
    if out is not None and overwrite:
        _clear(Path(out))
    model, tokenizer = _loaded(model, tokenizer)
    summary, cells, latents = evaluate_text(model, tokenizer, items, given, text_spec, baseline=base,
                                            shared_prefix=shared_prefix)
    if out is not None:
        doc = payload(summary, text_spec, given, label=None, model=str(getattr(model, "name_or_path", "")),
                      text=str(texts) if isinstance(texts, (str, Path)) else "<list>", text_sha256=None,
                      baseline=str(baseline) if baseline else None)
        write_run(Path(out), doc, cells, latents, text_spec, None)
    return summary


def audit(model: Any, tokenizer: Any = None, *, probe: str | Path, layer: int, out: str | Path,
          keywords: Sequence[str] = ("forget", "control"), nu: float | None = None, nu_relative: bool = False,
          overwrite: bool = False, **spec: Any) -> dict[str, Any]:
    """The latent audit (``rna audit``) on a JSONL probe; writes ``audit.json`` and latents to ``out``.

    ``keywords``: packaged list names or files; ``nu``: the RNA noise std the model was trained with
    (a fraction of the RMS with ``nu_relative``), for the predicted robustness; ``spec``:
    :class:`rna_train.eval.auditrun.AuditSpec` fields (``scoring``, ``alignment``, ``max_rows``, ...).
    """
    from rna_train.eval.auditrun import AuditSpec, NoiseGiven, check_lists, run_audit
    from rna_train.eval.keywords import resolve_keywords
    from rna_train.eval.probes import file_sha256, load_probe

    audit_spec = AuditSpec(layer=layer, **spec)
    questions = load_probe(Path(probe))
    lists = [resolve_keywords(source) for source in keywords]
    check_lists(lists)
    noise = NoiseGiven(nu, "rms" if nu_relative else "absolute", "nu=") if nu is not None else None
    if overwrite:
        _clear(Path(out))
    model, tokenizer = _loaded(model, tokenizer)
    info = {"model": str(getattr(model, "name_or_path", "")), "probe": str(probe), "probe_sha256": file_sha256(probe)}
    return run_audit(model, tokenizer, questions, lists, audit_spec, Path(out), noise=noise, info=info,
                     sources={kind: source for (kind, _), source in zip(lists, keywords, strict=True)})


def tune(latents: str | Path | None = None, *, target: float = 0.95, **kwargs: Any) -> Any:
    """The recommended noise scale and per-nu predictions (``rna tune``): from an audit's latents file,
    or from ``margins=``, ``eta=``, ``dim=`` (see :func:`rna_theory.tuner.tune`)."""
    from rna_theory.tuner import tune as tune_arrays
    from rna_theory.tuner import tune_from_file

    if latents is not None:
        return tune_from_file(latents, target=target, **kwargs)
    return tune_arrays(target=target, **kwargs)


def robustness(models: Sequence[str | Path], *, base: str | Path, out: str | Path,
               config: str | Path | None = None, **settings: Any) -> dict[str, Any]:
    """Run (or resume) the robustness suite on ``models`` against ``base`` into ``out`` and write its
    report (``rna robustness``); returns the ``robustness.json`` document.

    ``settings``: suite config keys with ``__`` for the dots (``forget=..., gcg__steps=10,
    sections=["text_nll", "gcg"]``); ``rna robustness --help-config`` lists them.
    """
    import json

    from rna_train.robustness.config import load_suite
    from rna_train.robustness.report import write_report
    from rna_train.robustness.suite import run_suite

    items = [f"models={json.dumps([str(m) for m in models])}", f"base={json.dumps(str(base))}"]
    items += [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in settings.items()]
    doc = run_suite(load_suite(config, items), out)
    write_report(doc, out)
    return doc
