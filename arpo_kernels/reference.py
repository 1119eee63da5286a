"""Plain-torch references of the kernels: the fallback backend, the baseline of the benchmarks and the oracle of
the tests. Differentiable by autograd; they materialise full [N, V] tensors (that is what the kernels avoid).
"""
from __future__ import annotations

import torch

from ._checks import out_dtype
from .spec import KL_LOG_CLAMP, KL_VALUE_CLAMP, LOG_RATIO_CLAMP


def logprob_entropy_reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                              ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V], targets [N] -> (logprobs [N], entropy [N]), computed in fp32 (fp64 for fp64 input).

    logp_y = z_y - lse(z), H = -Σ p log p with z = logits / temperature; rows whose target is ignore_index
    give 0 and no gradient.
    """
    return _logprob_entropy(logits.to(out_dtype(logits.dtype)), targets, temperature, ignore_index)


def torch_eager_logprob_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                                ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """The same chain computed in the logits' own dtype (what a user's torch code does; the baseline for
    low-precision error bounds and for the benchmarks)."""
    return _logprob_entropy(logits, targets, temperature, ignore_index)


def _logprob_entropy(z, targets, temperature, ignore_index):
    z = z / temperature
    logp = torch.log_softmax(z, dim=-1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets)).long()
    lp = logp.gather(-1, safe[:, None]).squeeze(-1)
    # H = -Σ p log p, written so that -inf logits (p = 0) contribute 0 to the value and the gradient
    ent = -(logp.exp() * torch.where(torch.isinf(logp), torch.zeros_like(logp), logp)).sum(-1)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(valid, lp, zero), torch.where(valid, ent, zero)


def linear_logprob_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                     temperature: float = 1.0, ignore_index: int = -100):
    """hidden [N, H], weight [V, H] -> the reference on logits = hidden @ weight.T (full [N, V] logits)."""
    return logprob_entropy_reference(hidden @ weight.T, targets, temperature, ignore_index)


# ---- clipped policy loss ------------------------------------------------------------------------------------


def kl_reference(logprobs, ref_logprobs, kl_type: str):
    """Per-token KL estimate of the policy to the reference policy (verl's kl_penalty): k1 = lp - ref,
    k2 = (lp - ref)^2 / 2, low_var_kl (k3) = exp(ref - lp) - (ref - lp) - 1 with ref - lp clamped to [-20, 20]
    and the result to [-10, 10]."""
    if kl_type == "k1":
        return logprobs - ref_logprobs
    if kl_type == "k2":
        return 0.5 * (logprobs - ref_logprobs) ** 2
    d = torch.clamp(ref_logprobs - logprobs, -KL_LOG_CLAMP, KL_LOG_CLAMP)
    return torch.clamp(torch.exp(d) - d - 1.0, -KL_VALUE_CLAMP, KL_VALUE_CLAMP)


def policy_loss_reference(logprobs, old_logprobs, advantages, mask, *, clip_low=0.2, clip_high=0.2,
                          dual_clip=None, ref_logprobs=None, kl_coef=0.0, kl_type="low_var_kl", entropy=None,
                          entropy_coef=0.0, agg="token-mean", seq_index=None):
    """The PPO/GRPO clipped objective written the usual way (verl/TRL): per token
    pg = max(-A·r, -A·clip(r, 1 - clip_low, 1 + clip_high)), with dual clip min(pg, -A·c) where A < 0,
    + kl_coef·KL - entropy_coef·H, aggregated over the tokens with mask > 0 by `agg` (sequences = rows of 2-D
    inputs, or the ids in `seq_index` for 1-D inputs). Returns the scalar loss (autograd through logprobs and
    entropy)."""
    log_ratio = torch.clamp(logprobs - old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        pg = torch.where(advantages < 0, torch.minimum(pg, -advantages * dual_clip), pg)
    per_token = pg
    if ref_logprobs is not None and kl_coef != 0.0:
        per_token = per_token + kl_coef * kl_reference(logprobs, ref_logprobs, kl_type)
    if entropy is not None and entropy_coef != 0.0:
        per_token = per_token - entropy_coef * entropy
    return aggregate_reference(per_token, mask, agg, seq_index)


def aggregate_reference(per_token, mask, agg, seq_index=None):
    """token-mean: Σ m·x / Σ m; seq-mean-token-mean: mean over sequences (with Σ m > 0) of Σ m·x / Σ m;
    seq-mean-token-sum: mean over those sequences of Σ m·x."""
    mask = mask.to(per_token.dtype)
    if agg == "token-mean":
        return (per_token * mask).sum() / mask.sum().clamp_min(1e-30)
    if seq_index is None:
        seq_sum, seq_cnt = (per_token * mask).sum(-1), mask.sum(-1)
    else:
        n = int(seq_index.max()) + 1 if seq_index.numel() else 0
        seq_sum = torch.zeros(n, dtype=per_token.dtype).index_add(0, seq_index, per_token * mask)
        seq_cnt = torch.zeros(n, dtype=per_token.dtype).index_add(0, seq_index, mask)
    live = seq_cnt > 0
    per_seq = seq_sum[live] / seq_cnt[live] if agg == "seq-mean-token-mean" else seq_sum[live]
    return per_seq.sum() / max(int(live.sum()), 1)
