"""Triton kernel of the fused policy-loss pass: one program per block of tokens writes the block's gradients and
one row of partial sums (summed on the host in a fixed order: deterministic). Same per-token math as
_torch_policy_loss.py; runs on CPU tensors under TRITON_INTERPRET=1."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .policy_loss import PARTS
from .reference import LOG_RATIO_CLAMP

BLOCK = 4096


@triton.jit
def _kl_and_grad(lp, ref, KL_CODE: tl.constexpr):
    """(KL, d KL / d lp) for KL_CODE 0 = low_var_kl, 1 = k1, 2 = k2."""
    if KL_CODE == 1:
        k = lp - ref
        dk = tl.full(lp.shape, 1.0, lp.dtype)
    elif KL_CODE == 2:
        k = 0.5 * (lp - ref) * (lp - ref)
        dk = lp - ref
    else:
        d = ref - lp
        inner = (d >= -20.0) & (d <= 20.0)
        d = tl.minimum(tl.maximum(d, -20.0), 20.0)
        e = tl.exp(d)
        k = e - d - 1.0
        dk = tl.where(inner & (k <= 10.0), 1.0 - e, 0.0)
        k = tl.minimum(tl.maximum(k, -10.0), 10.0)
    return k, dk


@triton.jit
def _policy_loss_kernel(LP, ENT, OLD, POS, NEG, W, WPOS, WNEG, REF, DLP, DENT, PARTS_PTR, SCALARS, N,
                        HAS_REF: tl.constexpr, KL_CODE: tl.constexpr, NPARTS: tl.constexpr, BLOCK: tl.constexpr):
    # scalars in the data's dtype (fp64 stays exact): lo, hi, dual-clip bound, kl_coef, entropy_coef, clamp
    lo, hi, c = tl.load(SCALARS + 0), tl.load(SCALARS + 1), tl.load(SCALARS + 2)
    kl_coef, ent_coef, clamp = tl.load(SCALARS + 3), tl.load(SCALARS + 4), tl.load(SCALARS + 5)
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    w = tl.load(W + offs, mask=m, other=0.0)
    active = m & (w != 0.0)  # tokens outside the loss may hold anything (NaN included): not read
    lp = tl.load(LP + offs, mask=active, other=0.0)
    old = tl.load(OLD + offs, mask=active, other=0.0)
    pos = tl.load(POS + offs, mask=m, other=0.0)
    neg = tl.load(NEG + offs, mask=m, other=0.0)
    lr = lp - old
    r = tl.exp(tl.minimum(tl.maximum(lr, -clamp), clamp))
    g = -tl.where(r <= hi, pos, 0.0) - tl.where((r >= lo) & (r <= c), neg, 0.0)
    g = tl.where(tl.abs(lr) <= clamp, g * r, 0.0)
    pg = -pos * tl.minimum(r, hi) - neg * tl.minimum(tl.maximum(r, lo), c)
    kl = tl.zeros_like(lp)
    if HAS_REF:
        kl, dk = _kl_and_grad(lp, tl.load(REF + offs, mask=active, other=0.0), KL_CODE)
        g += kl_coef * w * dk
    tl.store(DLP + offs, g, mask=m)
    tl.store(DENT + offs, -ent_coef * w, mask=m)
    ent = tl.load(ENT + offs, mask=active, other=0.0)
    wpos = tl.load(WPOS + offs, mask=m, other=0.0)
    wneg = tl.load(WNEG + offs, mask=m, other=0.0)
    row = PARTS_PTR + pid * NPARTS
    tl.store(row + 0, tl.sum(pg, axis=0))
    tl.store(row + 1, tl.sum(w * kl, axis=0))
    tl.store(row + 2, tl.sum(w * ent, axis=0))
    tl.store(row + 3, tl.sum(w, axis=0))
    tl.store(row + 4, tl.sum(w * r, axis=0))
    tl.store(row + 5, tl.sum(-w * lr, axis=0))
    tl.store(row + 6, tl.sum(tl.where(r > hi, wpos, 0.0), axis=0))
    tl.store(row + 7, tl.sum(tl.where(r < lo, wneg, 0.0), axis=0))
    tl.store(row + 8, tl.sum(tl.where(r > c, wneg, 0.0), axis=0))
    tl.store(row + 9, tl.min(tl.where(active, r, float("inf")), axis=0))
    tl.store(row + 10, tl.max(tl.where(active, r, float("-inf")), axis=0))


def fused(lp, ent, old, pos, neg, w, wpos, wneg, ref, params):
    """Per-token tensors [N] (fp32/fp64) -> (parts [blocks, 11] float64, d loss/d lp, d loss/d entropy)."""
    n = lp.shape[0]
    dlp, dent = torch.empty_like(lp), torch.empty_like(lp)
    blocks = max(1, triton.cdiv(n, BLOCK))
    parts = torch.empty(blocks, len(PARTS), dtype=lp.dtype, device=lp.device)
    scalars = torch.tensor([*params.bounds, params.kl_coef, params.entropy_coef, LOG_RATIO_CLAMP], dtype=lp.dtype,
                           device=lp.device)
    _policy_loss_kernel[(blocks,)](lp, ent, old, pos, neg, w, wpos, wneg, lp if ref is None else ref, dlp, dent,
                                   parts, scalars, n, HAS_REF=ref is not None, KL_CODE=params.kl_code,
                                   NPARTS=len(PARTS), BLOCK=BLOCK)
    return parts.to(torch.float64), dlp, dent
