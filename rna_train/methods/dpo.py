"""DPO with refusals preferred: forget continuations are dispreferred, "I don't know" preferred.

Each forget sequence is split into a prompt (its first ``prompt_fraction`` of tokens) and the
dispreferred answer (the rest); the preferred answer is a refusal string chosen per document.
Log-probabilities are summed over answer tokens only, and both log-ratios are taken against the
frozen *reference* model (the reference code wrongly used the current model for the refusal).
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from rna_theory.errors import RNAError
from rna_train import losses
from rna_train.data import collate
from rna_train.methods import register
from rna_train.methods.base import RETAIN_DOC, RETAIN_LOSSES, Method, MethodOptions, Setup
from rna_train.schema import field
from rna_train.step import StepContext


def load_refusals(path: str | None = None) -> list[str]:
    """Refusal strings, one per non-empty line (default: the packaged ``data/refusals.txt``)."""
    if path is None:
        text = resources.files("rna_train").joinpath("data/refusals.txt").read_text(encoding="utf-8")
    else:
        if not Path(path).is_file():
            raise RNAError("refusals file not found", where="method.refusals", fix="check the path")
        text = Path(path).read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise RNAError("no refusal strings", where="method.refusals", fix="one refusal per line")
    return lines


def continuation_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as it is tokenised after other text and a space.

    Tokenising ``" " + text`` alone adds a stray word-boundary token with SentencePiece tokenizers
    (Llama, Mistral); tokenising it after an anchor and cutting the anchor off is right for both
    SentencePiece and byte-level BPE.
    """
    anchor = tokenizer("Q:", add_special_tokens=False)["input_ids"]
    full = tokenizer("Q: " + text, add_special_tokens=False)["input_ids"]
    if full[:len(anchor)] == anchor and len(full) > len(anchor):
        return list(full[len(anchor):])
    return list(tokenizer(" " + text, add_special_tokens=False)["input_ids"])


@dataclasses.dataclass
class DPOOptions(MethodOptions):
    """DPO options."""

    beta: float = field(0.1, gt=0, doc="inverse temperature")
    prompt_fraction: float = field(0.5, gt=0, max=1, doc="share of each forget sequence used as prompt")
    refusals: str | None = field(None, doc="file of refusal strings (default: packaged list)")
    alpha: float = field(50.0, min=0, doc="retain-loss weight")
    retain_loss: str = field("kl", choices=RETAIN_LOSSES, doc=RETAIN_DOC)


@register
class DPO(Method):
    """Direct Preference Optimization towards refusals on forget prompts."""

    name = "dpo"
    summary = "DPO: refusal preferred over the forget continuation, log-ratios vs. the frozen reference"
    Options = DPOOptions
    forget_uses_reference = True

    def __init__(self, options: DPOOptions, setup: Setup) -> None:
        super().__init__(options, setup)
        tok = setup.tokenizer
        self.refusal_ids = [continuation_ids(tok, r) for r in load_refusals(options.refusals)]
        self.pad_id = int(tok.pad_token_id)

    def pairs(self, batch: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(chosen, rejected) batches; ``label_mask`` marks the answer tokens that are scored."""
        chosen: list[list[int]] = []
        rejected: list[list[int]] = []
        prompts: list[int] = []
        lengths = batch["attention_mask"].sum(-1).tolist()
        for row, length, doc in zip(batch["input_ids"].tolist(), lengths, batch["index"].tolist(),
                                    strict=True):
            tokens = row[:int(length)]
            cut = min(max(round(self.options.prompt_fraction * len(tokens)), 1), len(tokens) - 1)
            refusal = self.refusal_ids[(doc + self.setup.seed) % len(self.refusal_ids)]
            chosen.append(tokens[:cut] + refusal)
            rejected.append(tokens)
            prompts.append(cut)
        device = batch["input_ids"].device
        return self._labelled(chosen, prompts, device), self._labelled(rejected, prompts, device)

    def _labelled(self, sequences: list[list[int]], prompts: list[int],
                  device: torch.device) -> dict[str, torch.Tensor]:
        out = collate(sequences, self.pad_id)
        positions = torch.arange(out["input_ids"].shape[1]).unsqueeze(0)
        out["label_mask"] = (positions >= torch.tensor(prompts).unsqueeze(1)).long() * out["attention_mask"]
        return {k: v.to(device) for k, v in out.items()}

    def reference_nll(self, ctx: StepContext, key: str, pair: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reference NLL of the answer tokens of ``pair`` (``key``: chosen or rejected), cached per sequence."""
        return self.reference_values(ctx, key, pair, lambda: ctx.ref_sequence_nll(pair, pair["label_mask"]))

    def prefill_forget(self, ctx: StepContext, batch: dict[str, torch.Tensor], topic: int) -> None:
        """Cache the reference NLL of the refusal and forget answers built from ``batch`` (and their shared prefix)."""
        for key, pair in zip(("chosen", "rejected"), self.pairs(batch), strict=True):
            if ctx.shared_layers and ctx.truncate:
                ctx.store_reference_states(pair, ctx.shared_layers - 1)
            self.reference_nll(ctx, key, pair)

    def forget_loss(self, ctx: StepContext, batch: dict[str, torch.Tensor],
                    topic: int) -> tuple[torch.Tensor, dict[str, float]]:
        """DPO loss; logs the policy's chosen-minus-rejected log-ratio margin."""
        logp = {}
        for key, pair in zip(("chosen", "rejected"), self.pairs(batch), strict=True):
            nll, _ = ctx.sequence_nll(pair, pair["label_mask"])
            logp[key], logp[f"{key}_ref"] = -nll, -self.reference_nll(ctx, key, pair)
        loss = losses.dpo_loss(logp["chosen"], logp["chosen_ref"], logp["rejected"], logp["rejected_ref"],
                               self.options.beta)
        margin = (logp["chosen"] - logp["chosen_ref"]) - (logp["rejected"] - logp["rejected_ref"])
        return loss, {"dpo_margin": float(margin.detach().mean())}
