"""verl's ``vanilla`` policy loss computed by the fused arpo_kernels policy loss, registered in verl's
policy-loss registry as ``"arpo_vanilla"`` when this module is imported.

Select it in a verl run with ``actor_rollout_ref.actor.policy_loss.loss_mode=arpo_vanilla``. Installing
arpo-engine declares this module as a ``verl.plugins`` entry point, which ``import verl`` loads, so every verl
process (Ray workers included) knows the name; ``VERL_USE_EXTERNAL_MODULES=arpo_kernels.integrations.verl``
does the same where entry points are turned off (``VERL_USE_EXTERNAL_PLUGINS=none``).

Same loss and gradient as ``verl.trainer.ppo.core_algos.compute_policy_loss_vanilla`` (verl 0.9.1): ratio
r = exp(clamp(log_prob - old_log_prob, ±20)); per token max(-A·r, -A·clip(r, 1 - clip_ratio_low,
1 + clip_ratio_high)), then min(·, -A·clip_ratio_c) where A < 0; times ``rollout_is_weights`` when given;
aggregated as verl's ``agg_loss`` does with ``config.global_batch_info`` (dp_size, batch_num_tokens,
global_batch_size, loss_scale_factor). The per-token loss is linear in A on each sign, so the aggregation weight
and the importance weight both go into the advantage terms of the packed kernel (spec.TokenTerms). The kernel's
per-token ``weight`` enters the loss only through KL and entropy terms, which verl adds outside the policy
loss, so here it is the response mask: the kernel's metrics are then verl's plain masked means
(``actor/pg_clipfrac``, ``actor/ppo_kl``, ``actor/pg_clipfrac_lower``).

Deliberate differences: a micro-batch without any response token gives loss 0 (verl: NaN from 0/0);
negative ``rollout_is_weights`` are refused.
"""
from __future__ import annotations

import torch
from verl.trainer.ppo.core_algos import register_policy_loss

from ..policy_loss import flat_terms, policy_loss_packed

LOSS_NAME = "arpo_vanilla"
VERL_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                  "seq-mean-token-sum-norm")


def agg_weights(response_mask: torch.Tensor, loss_agg_mode: str, dp_size: int = 1, batch_num_tokens=None,
                global_batch_size=None, loss_scale_factor=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-token weights w [B, L] of verl's ``agg_loss``: Σ w·loss_mat equals agg_loss(loss_mat, response_mask,
    loss_agg_mode, ...) for any loss_mat [B, L]; 0 off the mask. The counts default to the micro-batch's."""
    if loss_agg_mode not in VERL_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}: expected one of "
                         f"{', '.join(VERL_AGG_MODES)}")
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be 2-D [batch, response_length], got "
                         f"{tuple(response_mask.shape)}")
    m = response_mask.to(dtype)
    if loss_agg_mode == "token-sum":
        return m * dp_size
    if loss_agg_mode == "token-mean":
        tokens = m.sum() if batch_num_tokens is None else torch.as_tensor(batch_num_tokens)
        return m * (dp_size / tokens.to(device=m.device, dtype=dtype).clamp_min(1.0))
    per_seq = m.sum(-1, keepdim=True)  # [B, 1]
    seqs = (per_seq > 0).sum() if global_batch_size is None else torch.as_tensor(global_batch_size)
    w = m * (dp_size / seqs.to(device=m.device, dtype=dtype).clamp_min(1.0))
    if loss_agg_mode == "seq-mean-token-mean":
        # verl divides by (count + 1e-8) computed in float32 from an integer count: the count itself
        return w / per_seq.clamp_min(1.0)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        return w / (m.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    return w


def _clip_ratios(config) -> tuple[float, float, float]:
    """(clip_low, clip_high, dual clip) from verl's actor config, with verl's defaults."""
    if config is None:
        raise ValueError(f"the {LOSS_NAME!r} policy loss needs verl's actor config (config=None)")
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return low, high, config.get("clip_ratio_c", 3.0)


def _check_inputs(log_prob, **like) -> None:
    """log_prob a 2-D [B, L] tensor and every tensor of ``like`` of its shape; errors name the argument."""
    if not isinstance(log_prob, torch.Tensor) or log_prob.dim() != 2:
        got = tuple(log_prob.shape) if isinstance(log_prob, torch.Tensor) else type(log_prob).__name__
        raise ValueError(f"log_prob must be a 2-D [batch, response_length] tensor, got {got}")
    for name, t in like.items():
        if not isinstance(t, torch.Tensor) or t.shape != log_prob.shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape {tuple(log_prob.shape)} (that of log_prob), "
                             f"got {got}")


@register_policy_loss(LOSS_NAME)
def compute_policy_loss_arpo(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                             response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config=None,
                             rollout_is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """verl's policy-loss signature: [B, L] tensors (response_mask bool or 0/1), verl's ActorConfig. Returns
    (pg_loss, metrics): pg_loss 0-d, differentiable in log_prob; verl's three metrics as floats."""
    clip_low, clip_high, dual_clip = _clip_ratios(config)
    _check_inputs(log_prob, old_log_prob=old_log_prob, advantages=advantages, response_mask=response_mask)
    acc = torch.float64 if log_prob.dtype == torch.float64 else torch.float32  # the kernel's accumulation
    w = agg_weights(response_mask, loss_agg_mode, **config.global_batch_info, dtype=acc)
    if rollout_is_weights is not None:
        _check_inputs(log_prob, rollout_is_weights=rollout_is_weights)
        if bool((rollout_is_weights < 0).any()):
            raise ValueError("rollout_is_weights must be >= 0")
        w = w * rollout_is_weights.detach()
    pg = flat_terms(advantages, w)  # advantage terms: aggregation × importance weights
    counted = flat_terms(advantages, response_mask.to(acc))  # weight, weight_pos/neg: the mask (metrics)
    loss, m = policy_loss_packed(log_prob, old_log_prob, pg.adv_pos, pg.adv_neg, counted.weight,
                                 weight_pos=counted.weight_pos, weight_neg=counted.weight_neg,
                                 clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip)
    metrics = {"actor/pg_clipfrac": float(m["clip_frac_high"] + m["clip_frac_low"]),
               "actor/ppo_kl": float(m["approx_kl"]), "actor/pg_clipfrac_lower": float(m["dual_clip_frac"])}
    return loss, metrics
