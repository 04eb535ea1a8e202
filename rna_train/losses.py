"""Loss terms shared by every unlearning method, all respecting the attention mask.

Conventions (``mask`` is batch x seq with 1 for real tokens, right padding):

* representation terms average over real tokens and hidden units only;
* next-token terms use the distribution at position ``t`` to score token ``t + 1``; a position
  counts when both tokens are real; distribution-matching terms (KL, log-softmax MSE) use every
  real position;
* per-sequence negative log-likelihoods are *sums* over the scored tokens (the NPO / SimNPO /
  DPO papers' convention: SimNPO divides by the length itself), and ``mean_nll`` is the token mean
  over the whole batch (GA, GradDiff, NLL retain loss).

Padding never contributes to a value or a gradient. Functions take logits / hidden states, not
models, so they can be checked by hand on fixed tensors.

Token means divide by the batch's own count unless ``tokens`` / ``pairs`` is given: the trainer
passes the *global* batch's count divided by the number of micro-batches, so micro-batches and
processes with sequences of different lengths add up to exactly the global batch's token mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

#: The output head: states entering it (batch x positions x d) -> logits (batch x positions x vocab).
Head = Callable[[torch.Tensor], torch.Tensor]


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32 for the reduction; keep float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _count(mask: torch.Tensor, given: float | None = None) -> torch.Tensor | float:
    return mask.sum().clamp_min(1) if given is None else given


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               tokens: float | None = None) -> torch.Tensor:
    """Mean of ``(pred - target)**2`` over real tokens and hidden units (batch x seq x d inputs)."""
    diff = _acc(pred) - _acc(target)
    sq = diff.pow(2) * mask.to(diff.dtype).unsqueeze(-1)
    return sq.sum() / (_count(mask, tokens) * pred.shape[-1])


def token_norms(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each real token's hidden vector, 0 at padding (batch x seq)."""
    norms = _acc(hidden).norm(dim=-1)
    return norms * mask.to(norms.dtype)


def mean_token_norm(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean norm of the real tokens' hidden vectors (Adaptive RMU's ``||h||``)."""
    return token_norms(hidden, mask).sum() / _count(mask)


def next_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
                        label_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and where it counts.

    Returns ``(logp, valid)``, both batch x (seq - 1): ``logp[b, t] = log p(x[b, t+1] | x[b, <=t])``
    and ``valid`` is 1 where both tokens are real (and ``label_mask`` marks ``t + 1``).
    """
    logp_all = F.log_softmax(_acc(logits[:, :-1]), dim=-1)
    target = input_ids[:, 1:]
    logp = logp_all.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    valid = (mask[:, 1:] * mask[:, :-1]).to(logp.dtype)
    if label_mask is not None:
        valid = valid * label_mask[:, 1:].to(logp.dtype)
    return logp * valid, valid


def sequence_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
                 label_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed NLL and number of scored tokens (both of shape batch)."""
    logp, valid = next_token_logprobs(logits, input_ids, mask, label_mask)
    return -logp.sum(-1), valid.sum(-1)


def mean_nll(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
             pairs: float | None = None) -> torch.Tensor:
    """Token-mean NLL over the batch's real next tokens (``pairs`` overrides their count)."""
    logp, valid = next_token_logprobs(logits, input_ids, mask)
    return -logp.sum() / (valid.sum().clamp_min(1) if pairs is None else pairs)


def kl_ref_theta(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
                 tokens: float | None = None) -> torch.Tensor:
    """Mean over real positions of KL(p_ref || p_theta) between next-token distributions."""
    logq = F.log_softmax(_acc(logits), dim=-1)
    logp = F.log_softmax(_acc(ref_logits), dim=-1).to(logq.dtype)
    kl = (logp.exp() * (logp - logq)).sum(-1) * mask.to(logq.dtype)
    return kl.sum() / _count(mask, tokens)


def logsoftmax_mse(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor,
                   tokens: float | None = None) -> torch.Tensor:
    """Mean over real positions and the vocabulary of the squared log-softmax difference."""
    logq = F.log_softmax(_acc(logits), dim=-1)
    diff = logq - F.log_softmax(_acc(ref_logits), dim=-1).to(logq.dtype)
    return (diff.pow(2).mean(-1) * mask.to(diff.dtype)).sum() / _count(mask, tokens)


def npo_loss(nll: torch.Tensor, ref_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: ``-(2/beta) * mean log sigmoid(beta * (NLL_theta - NLL_ref))`` over sequences."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll - ref_nll)).mean()


def simnpo_loss(nll: torch.Tensor, length: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO: ``-(2/beta) * mean log sigmoid(beta * (NLL_theta / |y| - gamma))`` (no reference)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll / length.clamp_min(1) - gamma)).mean()


def dpo_loss(chosen_logp: torch.Tensor, chosen_ref_logp: torch.Tensor, rejected_logp: torch.Tensor,
             rejected_ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO with ``-(2/beta)`` scaling: the log-ratios are against the frozen *reference* model.

    ``-(2/beta) * mean log sigmoid(beta * ((logp_w - logp_ref_w) - (logp_l - logp_ref_l)))`` with
    ``w`` the preferred (refusal) and ``l`` the dispreferred (forget) answer.
    """
    margin = (chosen_logp - chosen_ref_logp) - (rejected_logp - rejected_ref_logp)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


# Head-level losses: the same values computed from the states entering the output head, a chunk
# of positions at a time. Every chunk's value depends only on its own positions' states, so the
# chunk's gradient with respect to them (d floats per position) is computed right away and its
# logits are freed: no batch x seq x vocab tensor is ever held (with a 128k vocabulary and 2,048
# tokens per micro-batch each float32 one is 1 GiB), nothing is recomputed, and the backward pass
# only scales the stored gradients. The output head's parameters must not require gradients.


class _Precomputed(torch.autograd.Function):
    """Returns ``values``; the backward pass hands ``grad_out * gradient`` to ``states``."""

    @staticmethod
    def forward(ctx: Any, states: torch.Tensor, values: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return values

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (gradient,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * gradient).to(gradient.dtype), None, None


def _chunked(fn: Callable[..., torch.Tensor], states: torch.Tensor, others: Sequence[torch.Tensor], head: Head,
             chunk: int) -> torch.Tensor:
    """``fn(states_chunk, *other_chunks, head)`` (batch x positions) over chunks of positions, concatenated."""
    pieces = []
    parts = [t.split(max(1, chunk), dim=1) for t in (states, *others)]
    for s, *rest in zip(*parts, strict=True):
        if not (torch.is_grad_enabled() and s.requires_grad):
            pieces.append(fn(s, *rest, head))
            continue
        leaf = s.detach().requires_grad_()
        values = fn(leaf, *rest, head)
        (gradient,) = torch.autograd.grad(values.sum(), leaf)
        pieces.append(_Precomputed.apply(s, values.detach(), gradient))
    return torch.cat(pieces, dim=1)


def _target_logprobs(states: torch.Tensor, target: torch.Tensor, head: Head) -> torch.Tensor:
    logp = F.log_softmax(_acc(head(states)), dim=-1)
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)


def head_next_token_logprobs(states: torch.Tensor, head: Head, input_ids: torch.Tensor, mask: torch.Tensor,
                             label_mask: torch.Tensor | None = None, *, chunk: int,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`next_token_logprobs` of ``head(states)``, ``chunk`` positions at a time."""
    logp = _chunked(_target_logprobs, states[:, :-1], [input_ids[:, 1:]], head, chunk)
    valid = (mask[:, 1:] * mask[:, :-1]).to(logp.dtype)
    if label_mask is not None:
        valid = valid * label_mask[:, 1:].to(logp.dtype)
    return logp * valid, valid


def head_sequence_nll(states: torch.Tensor, head: Head, input_ids: torch.Tensor, mask: torch.Tensor,
                      label_mask: torch.Tensor | None = None, *, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_nll` of ``head(states)``, ``chunk`` positions at a time."""
    logp, valid = head_next_token_logprobs(states, head, input_ids, mask, label_mask, chunk=chunk)
    return -logp.sum(-1), valid.sum(-1)


def head_mean_nll(states: torch.Tensor, head: Head, input_ids: torch.Tensor, mask: torch.Tensor,
                  pairs: float | None = None, *, chunk: int) -> torch.Tensor:
    """:func:`mean_nll` of ``head(states)``, ``chunk`` positions at a time."""
    logp, valid = head_next_token_logprobs(states, head, input_ids, mask, chunk=chunk)
    return -logp.sum() / (valid.sum().clamp_min(1) if pairs is None else pairs)


def _reference_logprobs(ref_states: torch.Tensor, head: Head, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(_acc(head(ref_states)), dim=-1).to(dtype)


def _kl_positions(states: torch.Tensor, ref_states: torch.Tensor, head: Head) -> torch.Tensor:
    logq = F.log_softmax(_acc(head(states)), dim=-1)
    logp = _reference_logprobs(ref_states, head, logq.dtype)
    return (logp.exp() * (logp - logq)).sum(-1)


def _mse_positions(states: torch.Tensor, ref_states: torch.Tensor, head: Head) -> torch.Tensor:
    logq = F.log_softmax(_acc(head(states)), dim=-1)
    return (logq - _reference_logprobs(ref_states, head, logq.dtype)).pow(2).mean(-1)


def head_kl_ref_theta(states: torch.Tensor, ref_states: torch.Tensor, head: Head, mask: torch.Tensor,
                      tokens: float | None = None, *, chunk: int) -> torch.Tensor:
    """:func:`kl_ref_theta` of ``head(states)`` against ``head(ref_states)``, ``chunk`` positions at a time."""
    kl = _chunked(_kl_positions, states, [ref_states], head, chunk)
    return (kl * mask.to(kl.dtype)).sum() / _count(mask, tokens)


def head_logsoftmax_mse(states: torch.Tensor, ref_states: torch.Tensor, head: Head, mask: torch.Tensor,
                        tokens: float | None = None, *, chunk: int) -> torch.Tensor:
    """:func:`logsoftmax_mse` of ``head(states)`` against ``head(ref_states)``, ``chunk`` positions at a time."""
    sq = _chunked(_mse_positions, states, [ref_states], head, chunk)
    return (sq * mask.to(sq.dtype)).sum() / _count(mask, tokens)
