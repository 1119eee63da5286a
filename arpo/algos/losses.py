"""Policy-loss variants, registered by name (``algo.loss``): each maps one micro-batch's trainable tokens to its
term of the mini-batch loss (the terms of a mini-batch's micro-batches add up to it) and its metrics.

A variant is ``fn(x: LossInputs, algo) -> (loss, metrics)``; ``algo`` is the run's AlgoConfig (clip_low,
clip_high, dual_clip, kl_coef, kl_type, entropy_coef, and any field a variant adds). Register it with
``@register_loss("name")`` — ``packed=False`` when its packed form is not exact — and ``algo.loss`` accepts the
name. ``metrics`` must hold ``ratio_min`` and ``ratio_max`` (NaN when no token counts); the trainer averages
``clip_frac_high``, ``clip_frac_low``, ``dual_clip_frac``, ``approx_kl``, ``ratio_mean``, ``entropy_mean`` and
``kl_mean`` when present.

Shipped: ``ppo_clip`` (the token-level clipped objective through the fused arpo_kernels pass; exact when packed)
and ``gspo`` (GSPO's sequence-level ratio; flat updates only, see ``gspo``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from arpo_kernels import TokenTerms, policy_loss_packed
from arpo_kernels.reference import kl_reference
from arpo_kernels.spec import LOG_RATIO_CLAMP

from . import lookup, new_name


@dataclasses.dataclass
class LossInputs:
    """One micro-batch's trainable tokens, each tensor [n]. ``terms`` carry the mini-batch's aggregation weights
    (spec.TokenTerms: sums over each token's copies, one copy per token in a flat batch)."""

    logprobs: torch.Tensor  # differentiable
    entropy: torch.Tensor  # differentiable when algo.entropy_coef != 0
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    terms: TokenTerms
    seq_index: torch.Tensor | None  # int64 sequence (leaf) of each token in a flat batch; None when packed
    backend: str = "auto"  # arpo_kernels backend


LossFn = Callable[[LossInputs, object], tuple[torch.Tensor, dict[str, torch.Tensor]]]
LOSSES: dict[str, LossFn] = {}
PACKED_EXACT: set[str] = set()  # variants whose packed form equals the flat one


def register_loss(name: str, *, packed: bool = True) -> Callable[[LossFn], LossFn]:
    """Decorator: register a loss variant under ``name`` (``packed``: its packed form is exact)."""
    new_name(LOSSES, name, "loss variant")

    def decorate(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        if packed:
            PACKED_EXACT.add(name)
        return fn

    return decorate


def get_loss(name: str) -> LossFn:
    """The registered loss variant ``name`` (a ValueError lists the registered names)."""
    return lookup(LOSSES, name, "loss variant")


# ---- the variants -------------------------------------------------------------------------------------------
@register_loss("ppo_clip")
def ppo_clip(x: LossInputs, algo):
    """PPO/GRPO's token-level clipped objective (clip-higher, dual clip, KL, entropy bonus): the fused kernels."""
    t = x.terms
    return policy_loss_packed(x.logprobs, x.old_logprobs, t.adv_pos, t.adv_neg, t.weight, weight_pos=t.weight_pos,
                              weight_neg=t.weight_neg, ref_logprobs=x.ref_logprobs, kl_coef=algo.kl_coef,
                              kl_type=algo.kl_type, entropy=x.entropy, entropy_coef=algo.entropy_coef,
                              clip_low=algo.clip_low, clip_high=algo.clip_high, dual_clip=algo.dual_clip,
                              backend=x.backend)


@register_loss("gspo", packed=False)
def gspo(x: LossInputs, algo):
    """GSPO (Zheng et al., 2025): one importance ratio per sequence, s_i = exp(mean over its tokens of
    (logprob - old_logprob)), clipped to [1 - clip_low, 1 + clip_high] (the paper uses ~3e-4 / 4e-4):

        loss = Σ_i W_i · max(-A_i·s_i, -A_i·clip(s_i)) + kl_coef·Σ_t w_t·KL_t - entropy_coef·Σ_t w_t·H_t

    with W_i = Σ of its tokens' aggregation weights (1/G per sequence under seq-mean-token-mean, GSPO's
    normalisation) and A_i its advantage (under ``algo.credit = hard``, the weight-averaged advantage of its
    tokens). dual_clip is not used. NaN/inf on tokens in the loss is an error naming the tensor.

    Not exact when packed: the gradient at a shared token is Σ over the leaves below it of W_i·A_i·s_i/|y_i|
    (where unclipped), and s_i depends on every other token of leaf i's path, so the token's copies do not reduce
    to per-token sums of constants (spec.TokenTerms). A packed form would need per-leaf reductions over the tree
    (log-ratio sums down each path, the leaf factors back up); the trainer refuses train.update = packed."""
    if x.seq_index is None:
        raise ValueError("the gspo loss needs one sequence per row (train.update = flat)")
    t, seq = x.terms, x.seq_index
    w = t.weight
    live = w != 0
    n_seq = int(seq.max()) + 1 if seq.numel() else 0
    for name, v in (("logprobs", x.logprobs), ("old_logprobs", x.old_logprobs), ("advantages", t.adv_pos + t.adv_neg),
                    ("ref_logprobs", x.ref_logprobs), ("entropy", x.entropy)):
        bad = 0 if v is None else int((~torch.isfinite(v.detach()) & live).sum())
        if bad:
            raise ValueError(f"{name} has {bad} NaN or inf values on tokens that count in the loss")

    def per_seq(v):
        return torch.zeros(n_seq, dtype=v.dtype, device=v.device).index_add(0, seq, v)

    count = per_seq(live.to(w.dtype))
    log_ratio = torch.where(live, x.logprobs - x.old_logprobs, 0.0)
    s = torch.exp(torch.clamp(per_seq(log_ratio) / count.clamp_min(1.0), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    seq_w = per_seq(w)
    seq_adv = per_seq(t.adv_pos + t.adv_neg) / seq_w.where(seq_w != 0, 1.0)  # one copy: w·A summed / Σ w
    lo, hi = 1.0 - algo.clip_low, 1.0 + algo.clip_high
    pg_seq = torch.maximum(-seq_adv * s, -seq_adv * torch.clamp(s, lo, hi))
    pg = (seq_w * pg_seq).sum()
    loss = pg
    metrics = {"pg_loss": pg.detach()}
    if x.ref_logprobs is not None and algo.kl_coef != 0.0:
        lp, ref = (torch.where(live, v, 0.0) for v in (x.logprobs, x.ref_logprobs))  # no NaN from unused tokens
        kl = (w * torch.where(live, kl_reference(lp, ref, algo.kl_type), 0.0)).sum()
        loss = loss + algo.kl_coef * kl
        metrics["kl_mean"] = kl.detach() / w.sum().clamp_min(1e-30)
    ent = (w * torch.where(live, x.entropy, 0.0)).sum()
    if algo.entropy_coef != 0.0:
        loss = loss - algo.entropy_coef * ent
    total = seq_w.sum().clamp_min(1e-30)
    has = seq_w != 0
    sd = s.detach()
    nan = torch.tensor(math.nan, dtype=sd.dtype)
    metrics.update(
        clip_frac_high=(seq_w * ((seq_adv > 0) & (sd > hi))).sum() / total,
        clip_frac_low=(seq_w * ((seq_adv < 0) & (sd < lo))).sum() / total,
        approx_kl=-(w * log_ratio.detach()).sum() / total, ratio_mean=(seq_w * sd).sum() / total,
        ratio_min=sd[has].min() if bool(has.any()) else nan, ratio_max=sd[has].max() if bool(has.any()) else nan,
        entropy_mean=ent.detach() / total)
    return loss, {k: v.detach() for k, v in metrics.items()}
