"""Every method x RNA mode x retain loss trains tiny Llama and GPT-2 models for a few steps."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import train_helpers as helpers
import yaml

from rna_train.config import load_config
from rna_train.methods import available
from rna_train.methods.base import Setup
from rna_train.models import frozen_copy, load_model
from rna_train.rna import RNA
from rna_train.step import StepContext
from rna_train.trainer import train

METHODS = ["rmu", "adaptive_rmu", "rsv", "npo", "dpo", "simnpo", "ga", "graddiff"]
RETAIN = ["rm", "kl", "mse", "nll"]


def _cases() -> list[tuple[str, str, str]]:
    cases = [("ga", "none", "off")]
    for method in METHODS:
        if method == "ga":
            continue
        for retain in RETAIN:
            for mode in ("off", "target", "input"):
                if mode == "target" and retain == "nll":
                    continue  # rejected by validation: nll has no reference to perturb
                cases.append((method, retain, mode))
    return cases


def test_the_test_matrix_covers_every_registered_method() -> None:
    """A method added to the registry but not to METHODS would train untested: fail instead."""
    assert set(METHODS) == set(available()), "add the new method to METHODS (and its config) to test it"


@pytest.fixture(scope="module")
def small_corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A forget corpus of exactly one batch, so each step's forget loss is on the same texts."""
    return helpers.write_corpora(tmp_path_factory.mktemp("small"), n_forget=4, n_retain=8)


@pytest.fixture(scope="module")
def models(assets: dict[str, Path]) -> dict[str, tuple[torch.nn.Module, object]]:
    return {arch: load_model(from_config=helpers.TINY[arch], tokenizer=str(assets["tokenizer"]), seed=0)
            for arch in ("llama", "gpt2")}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize(("method", "retain", "mode"), _cases())
def test_method_trains(arch: str, method: str, retain: str, mode: str, assets: dict[str, Path],
                       small_corpora: dict[str, Path], models: dict, tmp_path: Path) -> None:
    base, tok = models[arch]
    model = copy.deepcopy(base)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    # NLL (~4 nats) dwarfs the tiny models' hidden-state MSEs (~0.02): weight it down.
    alpha = 0.01 if retain == "nll" else 1.0
    raw = helpers.run_config(assets["tokenizer"], small_corpora, tmp_path / "out", arch=arch,
                             method={"name": method, "retain_loss": retain, "alpha": alpha},
                             rna={"mode": mode, "noise": 0.05}, steps=4, lr=2e-3)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    cfg, options = load_config(tmp_path / "c.yaml")
    result = train(cfg, options, model_and_tokenizer=(model, tok))
    rows = result.metrics
    assert len(rows) == 4
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
        assert ("retain" in row) == (retain != "none")
    assert rows[-1]["forget"] < rows[0]["forget"], "the forget objective did not improve"
    if mode == "off" and retain in ("rm", "kl", "mse"):  # the first step starts at the reference
        assert rows[0]["retain"] == pytest.approx(0.0, abs=1e-6)
    trained = set(result.trainable)
    suffix = "mlp.c_proj" if arch == "gpt2" else "mlp.down_proj"
    assert trained and all(suffix in n for n in trained)
    assert {int(n.split(".")[2]) for n in trained} == {0, 1, 2}
    changed = False
    for name, value in model.state_dict().items():
        if name in trained:
            changed |= not torch.equal(value, original[name])
        else:
            assert torch.equal(value, original[name]), f"{name} changed but is frozen"
    assert changed
    if result.reference is not None:
        for name, value in result.reference.state_dict().items():
            assert torch.equal(value, original[name]), "the reference must keep the original weights"
    assert all(not p.requires_grad for n, p in model.named_parameters() if n not in trained)


def test_dpo_log_ratio_uses_reference(assets: dict[str, Path], models: dict) -> None:
    """The DPO loss equals a hand computation whose log-ratios use the frozen reference."""
    from rna_train.data import collate
    from rna_train.losses import sequence_nll
    from rna_train.methods.dpo import DPO, DPOOptions

    base, tok = models["llama"]
    model = copy.deepcopy(base)
    reference = frozen_copy(model)
    with torch.no_grad():  # make the current model differ from the reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    topic = helpers.run_config(assets["tokenizer"], assets, Path("unused"))["data"]["forget"]
    from rna_train.config import TopicConfig

    method = DPO(DPOOptions(layer=2), Setup(hidden_size=32, topics=[TopicConfig(**topic[0])], seed=0,
                                             tokenizer=tok))
    texts = ["virus protein spike cell gene", "the toxin of a host"]
    batch = collate(tok(texts)["input_ids"], tok.pad_token_id)
    batch["index"] = torch.tensor([0, 1])
    ctx = StepContext(model=model, forward=model, reference=reference, rna=RNA(), step=0)
    model.eval()
    loss, _ = method.forget_loss(ctx, batch, 0)
    chosen, rejected = method.pairs(batch)

    def logp(m: torch.nn.Module, pair: dict) -> torch.Tensor:
        with torch.no_grad():
            logits = m(input_ids=pair["input_ids"], attention_mask=pair["attention_mask"]).logits
        return -sequence_nll(logits, pair["input_ids"], pair["attention_mask"], pair["label_mask"])[0]

    chosen_ratio = logp(model, chosen) - logp(reference, chosen)
    margin = chosen_ratio - (logp(model, rejected) - logp(reference, rejected))
    expected = -(2 / 0.1) * torch.nn.functional.logsigmoid(0.1 * margin).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    buggy = (logp(model, chosen) - logp(model, chosen)) - (logp(model, rejected) - logp(reference, rejected))
    assert not torch.allclose(margin, buggy), "test is vacuous: reference and current model coincide"
    # Chosen answers are refusals after a prompt cut from the forget text; rejected are the text.
    assert torch.equal(rejected["input_ids"][:, :3], chosen["input_ids"][:, :3])


def test_refusal_ids_have_no_stray_boundary_token(assets: dict[str, Path]) -> None:
    """Refusals are tokenised as a continuation (no lone word-boundary token in front)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rna_train.methods.dpo import continuation_ids, load_refusals
    from rna_train.models import load_tokenizer

    tok = load_tokenizer(str(assets["tokenizer"]))
    assert continuation_ids(tok, "i don't know .") == tok("i don't know .", add_special_tokens=False)["input_ids"]
    vocab = {w: i for i, w in enumerate(["<unk>", "▁", "▁Q:", "▁I", "▁know."])}
    sp = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>")
    assert fast.convert_ids_to_tokens(continuation_ids(fast, "I know.")) == ["▁I", "▁know."]
    refusals = load_refusals()
    assert len(refusals) >= 40 and len(set(refusals)) == len(refusals)
