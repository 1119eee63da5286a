"""Vectorised torch implementation of the fused policy-loss pass (the fallback backend; the numba and Triton
kernels compute exactly this per token). See policy_loss.py for the formula and the backend contract."""
from __future__ import annotations

import math

import torch

from .reference import LOG_RATIO_CLAMP


def kl_and_grad(lp, ref, kl_code: int):
    """Per-token KL to the reference and d KL / d lp, for kl_code 0 = low_var_kl, 1 = k1, 2 = k2."""
    if kl_code == 1:
        return lp - ref, torch.ones_like(lp)
    if kl_code == 2:
        return 0.5 * (lp - ref) ** 2, lp - ref
    d = ref - lp
    inner = (d >= -20.0) & (d <= 20.0)
    d = d.clamp(-20.0, 20.0)
    k = torch.exp(d) - d - 1.0
    return k.clamp(-10.0, 10.0), (1.0 - torch.exp(d)) * (inner & (k <= 10.0))


def split_advantages(a0, a1, w, w0, w1, flat: bool):
    """(Σ w·A⁺, Σ w·A⁻, Σ w over A > 0, Σ w over A < 0) per token, from flat (advantages, weights) or packed."""
    if not flat:
        return a0, a1, w0, w1
    pos, neg = (a0 > 0).to(w.dtype), (a0 < 0).to(w.dtype)
    return w * a0 * pos, w * a0 * neg, w * pos, w * neg


def _packed_invalid(a0, a1, w, w0, w1):
    """inf where a packed token's advantage/weight inputs are non-finite or adv_pos < 0 / adv_neg > 0."""
    ok = torch.isfinite(a0 + a1 + w + w0 + w1) & (a0 >= 0) & (a1 <= 0)
    return torch.where(ok, 0.0, math.inf)


def fused(lp, old, ent, ref, a0, a1, w, w0, w1, params, flat: bool):
    """Per-token arrays [N] -> (parts [1, len(PARTS)] float64, d loss/d lp [N], d loss/d entropy [N])."""
    lo, hi, c = params.bounds
    # tokens outside the loss may hold anything (NaN included): read as 0. A packed token counts when it has a
    # weight or an advantage term.
    active = (w != 0) if flat else (w != 0) | (a0 != 0) | (a1 != 0)
    bad = [(~torch.isfinite(t) & active).sum() if t is not None else lp.new_zeros(())
           for t in (lp, old, a0 if flat else _packed_invalid(a0, a1, w, w0, w1), ref, ent)]
    clean = [None if t is None else torch.where(active, t, 0.0) for t in (lp, old, ent, ref, a0, a1)]
    lp, old, ent, ref, a0, a1 = clean
    pos, neg, wpos, wneg = split_advantages(a0, a1, w, w0, w1, flat)
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
