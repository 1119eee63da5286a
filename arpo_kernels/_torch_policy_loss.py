"""Vectorised torch implementation of the fused policy-loss pass (the fallback backend; the numba and Triton
kernels compute exactly this per token). See policy_loss.py for the formula and the backend contract."""
from __future__ import annotations

import math

import torch

from .spec import KL_LOG_CLAMP, KL_VALUE_CLAMP, LOG_RATIO_CLAMP, PolicyInputs


def kl_and_grad(lp, ref, kl_code: int):
    """Per-token KL to the reference and d KL / d lp, for kl_code 0 = low_var_kl, 1 = k1, 2 = k2."""
    if kl_code == 1:
        return lp - ref, torch.ones_like(lp)
    if kl_code == 2:
        return 0.5 * (lp - ref) ** 2, lp - ref
    d = ref - lp
    inner = (d >= -KL_LOG_CLAMP) & (d <= KL_LOG_CLAMP)
    d = d.clamp(-KL_LOG_CLAMP, KL_LOG_CLAMP)
    k = torch.exp(d) - d - 1.0
    return k.clamp(-KL_VALUE_CLAMP, KL_VALUE_CLAMP), (1.0 - torch.exp(d)) * (inner & (k <= KL_VALUE_CLAMP))


def _invalid_terms(terms):
    """inf where a token's advantage/weight terms are non-finite or adv_pos < 0 / adv_neg > 0."""
    ok = torch.isfinite(sum(terms)) & (terms.adv_pos >= 0) & (terms.adv_neg <= 0)
    return torch.where(ok, 0.0, math.inf)


def fused(x: PolicyInputs, params):
    """PolicyInputs of [N] tensors -> (parts [1, len(PARTS)] float64, d loss/d lp [N], d loss/d entropy [N])."""
    lo, hi, c = params.bounds
    t = x.terms
    w = t.weight
    # tokens outside the loss may hold anything (NaN included): read as 0
    active = (w != 0) | (t.adv_pos != 0) | (t.adv_neg != 0)
    bad = [(~torch.isfinite(v) & active).sum() if v is not None else w.new_zeros(())
           for v in (x.logprobs, x.old_logprobs, _invalid_terms(t), x.ref_logprobs, x.entropy)]
    lp, old, ent, ref, pos, neg, wpos, wneg = [None if v is None else torch.where(active, v, 0.0) for v in (
        x.logprobs, x.old_logprobs, x.entropy, x.ref_logprobs, t.adv_pos, t.adv_neg, t.weight_pos, t.weight_neg)]
    log_ratio = lp - old
    in_range = log_ratio.abs() <= LOG_RATIO_CLAMP
    r = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    pg = -pos * torch.clamp(r, max=hi) - neg * torch.clamp(r, min=lo, max=c)
    dlp = (-pos * (r <= hi) - neg * ((r >= lo) & (r <= c))) * r * in_range
    kl = torch.zeros_like(lp)
    if ref is not None:
        kl, dkl = kl_and_grad(lp, ref, params.kl_code)
        dlp = dlp + params.kl_coef * w * dkl
    big = torch.finfo(r.dtype).max
    parts = torch.stack([
        pg.sum(), (w * kl).sum(), (w * ent).sum() if ent is not None else lp.new_zeros(()), w.sum(), (w * r).sum(),
        (w * -log_ratio).sum(), (wpos * (r > hi)).sum(), (wneg * (r < lo)).sum(), (wneg * (r > c)).sum(), *bad,
        torch.where(w != 0, r, big).min() if lp.numel() else r.new_tensor(big),
        torch.where(w != 0, r, -big).max() if lp.numel() else r.new_tensor(-big),
    ]).to(torch.float64)
    return parts[None], dlp, -params.entropy_coef * w
