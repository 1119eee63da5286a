"""Vectorised torch implementation of the fused policy-loss pass (the fallback backend; the numba and Triton
kernels compute exactly this per token). See policy_loss.py for the formula."""
from __future__ import annotations

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


def fused(lp, ent, old, pos, neg, w, wpos, wneg, ref, params):
    """Per-token arrays [N] -> (parts [1, 11] float64, d loss/d lp [N], d loss/d entropy [N])."""
    lo, hi, c = params.bounds
    active = w != 0  # tokens outside the loss may hold anything (NaN included): read as 0
    lp, old, ent = (torch.where(active, t, 0.0) for t in (lp, old, ent))
    ref = None if ref is None else torch.where(active, ref, 0.0)
    log_ratio = lp - old
    in_range = log_ratio.abs() <= LOG_RATIO_CLAMP
    r = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    f_pos, f_neg = torch.clamp(r, max=hi), torch.clamp(r, min=lo, max=c)
    pg = -pos * f_pos - neg * f_neg
    dlp = (-pos * (r <= hi) - neg * ((r >= lo) & (r <= c))) * r * in_range
    kl = torch.zeros_like(lp)
    if ref is not None:
        kl, dkl = kl_and_grad(lp, ref, params.kl_code)
        dlp = dlp + params.kl_coef * w * dkl
    big = torch.finfo(r.dtype).max
    parts = torch.stack([
        pg.sum(), (w * kl).sum(), (w * ent).sum(), w.sum(), (w * r).sum(), (w * -log_ratio).sum(),
        (wpos * (r > hi)).sum(), (wneg * (r < lo)).sum(), (wneg * (r > c)).sum(),
        torch.where(active, r, big).min() if lp.numel() else r.new_tensor(big),
        torch.where(active, r, -big).max() if lp.numel() else r.new_tensor(-big),
    ]).to(torch.float64)
    return parts[None], dlp, -params.entropy_coef * w
