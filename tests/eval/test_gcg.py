"""GCG attack: exact candidate scoring, embeddings of one-hot rows, the optimisation lowers its loss,
the transfer scores the same targets in every condition, the model is left as it was, bad budgets
and short texts are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rna_theory.errors import RNAError
from rna_train.arch import embed_onehot
from rna_train.attacks import gcg
from rna_train.eval.loading import load_for_eval

WORDS = ["the", "cell", "virus", "protein", "gene", "was", "in", "a", "city", "river", "king", "war", "music"]
SPEC = gcg.GCGSpec(steps=4, n_tokens=3, search_width=16, topk=16, train_prompts=3, prompt_tokens=4,
                   target_tokens=5, heldout=6, batch_size=16)


def _texts(n: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (14,), generator=gen)) for _ in range(n)]


def _reference_nll(model, row: torch.Tensor, n_target: int) -> float:
    """Mean NLL of the row's last n_target tokens by a plain full forward pass."""
    logp = model(input_ids=row[None]).logits[0].float().log_softmax(-1)
    positions = range(row.numel() - n_target, row.numel())
    return float(-sum(logp[i - 1, row[i]] for i in positions) / n_target)


def test_candidate_rows_are_scored_exactly(llama_dir: Path) -> None:
    model, tok = load_for_eval(str(llama_dir))
    items = gcg.cut_texts(tok, _texts(3, 1), SPEC, 3)
    middles = torch.tensor([[5, 6, 7], [8, 9, 10]])
    rows = gcg._rows(items, middles)
    assert rows.shape == (6, 4 + 3 + 5)
    assert rows[4, 4:7].tolist() == [8, 9, 10] and rows[4, 7:].tolist() == items[1][1]
    nll, top1 = gcg.score_rows(model, rows, 5, batch_size=4)
    with torch.no_grad():
        for r in range(rows.shape[0]):
            assert nll[r] == pytest.approx(_reference_nll(model, rows[r], 5), abs=1e-5)
    assert ((top1 >= 0) & (top1 <= 1)).all()


def test_onehot_rows_embed_like_their_ids(llama_dir: Path) -> None:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    llama, _ = load_for_eval(str(llama_dir))
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=16))
    ids = torch.tensor([3, 17, 42])
    for model in (llama, gemma):
        vocab = model.get_input_embeddings().weight.shape[0]
        onehot = torch.nn.functional.one_hot(ids, vocab).float()
        torch.testing.assert_close(embed_onehot(model, onehot), model.get_input_embeddings()(ids))
    assert float(gemma.get_input_embeddings().embed_scale) != 1.0  # the scale is really exercised


def test_optimisation_lowers_the_loss_and_leaves_the_model(llama_dir: Path) -> None:
    model, tok = load_for_eval(str(llama_dir))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    items = gcg.cut_texts(tok, _texts(3, 2), SPEC, 3)
    found = gcg.optimise(model, tok, items, SPEC)
    assert found["best_loss"] < found["initial_loss"] and len(found["losses"]) == SPEC.steps
    assert found["best_loss"] == pytest.approx(min(found["losses"]))
    allowed = set(gcg.allowed_tokens(tok, len(tok)).tolist())
    assert len(found["ids"]) == SPEC.n_tokens and set(found["ids"]) <= allowed
    rows = gcg._rows(items, torch.tensor([found["ids"]]))
    assert float(gcg.score_rows(model, rows, 5, 8)[0].mean()) == pytest.approx(found["best_loss"], abs=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_run_transfers_with_paired_intervals(llama_dir: Path, llama2_dir: Path) -> None:
    model, tok = load_for_eval(str(llama_dir))
    base = load_for_eval(str(llama2_dir))
    result = gcg.run(model, tok, _texts(4, 3), _texts(8, 4), SPEC, base=base)
    heldout = result["heldout"]["nll"]
    assert result["n_train"] == 3 and result["n_heldout"] == 6
    diff = heldout["attack"]["mean"] - heldout["clean"]["mean"]
    assert heldout["attack_minus_clean"]["mean"] == pytest.approx(diff, abs=1e-9)
    assert heldout["attack_minus_clean"]["low"] <= diff <= heldout["attack_minus_clean"]["high"]
    items = gcg.cut_texts(tok, _texts(8, 4), SPEC, 6)
    clean = gcg.score_rows(base[0], gcg._rows(items, torch.zeros((1, 0), dtype=torch.long)), 5, 8)[0]
    assert result["base"]["nll"]["mean"] == pytest.approx(float(clean.mean()), abs=1e-6)


def test_bad_budgets_and_short_texts_are_refused(llama_dir: Path) -> None:
    model, tok = load_for_eval(str(llama_dir))
    with pytest.raises(RNAError, match=r"gcg\.steps must be a positive integer"):
        gcg.run(model, tok, _texts(4, 3), _texts(4, 4), gcg.GCGSpec(steps=0))
    with pytest.raises(RNAError, match="fewer than 2 attack texts"):
        gcg.run(model, tok, ["the cell"] * 4, _texts(4, 4), SPEC)
    with pytest.raises(RNAError, match="fewer than 2 forget texts"):
        gcg.run(model, tok, _texts(4, 3), ["a virus"], SPEC)
