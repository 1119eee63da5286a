"""Triton kernel of the fused policy-loss pass: one program per block of tokens writes the block's gradients and
one row of partial sums (summed on the host in a fixed order: deterministic). Same per-token math as
_torch_policy_loss.py; runs on CPU tensors under TRITON_INTERPRET=1."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .spec import KL_LOG_CLAMP, KL_VALUE_CLAMP, LOG_RATIO_CLAMP, PARTS, PolicyInputs

BLOCK = 4096


@triton.jit
def _kl_and_grad(lp, ref, KL_CODE: tl.constexpr, KL_LOG: tl.constexpr, KL_VAL: tl.constexpr):
    """(KL, d KL / d lp) for KL_CODE 0 = low_var_kl, 1 = k1, 2 = k2."""
    if KL_CODE == 1:
        k = lp - ref
        dk = tl.full(lp.shape, 1.0, lp.dtype)
    elif KL_CODE == 2:
        k = 0.5 * (lp - ref) * (lp - ref)
        dk = lp - ref
    else:
        d = ref - lp
        inner = (d >= -KL_LOG) & (d <= KL_LOG)
        d = tl.minimum(tl.maximum(d, -KL_LOG), KL_LOG)
        e = tl.exp(d)
        k = e - d - 1.0
        dk = tl.where(inner & (k <= KL_VAL), 1.0 - e, 0.0)
        k = tl.minimum(tl.maximum(k, -KL_VAL), KL_VAL)
    return k, dk


@triton.jit
def _bad(x):
    return tl.where((x == x) & (tl.abs(x) < float("inf")), 0.0, 1.0)


@triton.jit
def _policy_loss_kernel(LP, OLD, ENT, REF, ADV_POS, ADV_NEG, W, W_POS, W_NEG, DLP, DENT, PARTS_PTR, SCALARS, N,
                        HAS_ENT: tl.constexpr, HAS_REF: tl.constexpr, KL_CODE: tl.constexpr, KL_LOG: tl.constexpr,
                        KL_VAL: tl.constexpr, NPARTS: tl.constexpr, BLOCK: tl.constexpr):
    # scalars in the data's dtype (fp64 stays exact): lo, hi, dual-clip bound, kl_coef, entropy_coef, clamp
    lo, hi, c = tl.load(SCALARS + 0), tl.load(SCALARS + 1), tl.load(SCALARS + 2)
    kl_coef, ent_coef, clamp = tl.load(SCALARS + 3), tl.load(SCALARS + 4), tl.load(SCALARS + 5)
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    w = tl.load(W + offs, mask=m, other=0.0)
    zero = tl.zeros_like(w)
    # a token counts when it has a weight or an advantage term; others may hold anything (NaN included): not read
    pos, neg = tl.load(ADV_POS + offs, mask=m, other=0.0), tl.load(ADV_NEG + offs, mask=m, other=0.0)
    act = m & ((w != 0.0) | (pos != 0.0) | (neg != 0.0))
    wpos, wneg = tl.load(W_POS + offs, mask=act, other=0.0), tl.load(W_NEG + offs, mask=act, other=0.0)
    bad_adv = tl.where((pos >= 0) & (neg <= 0), _bad(pos + neg + w + wpos + wneg), 1.0)
    lp = tl.load(LP + offs, mask=act, other=0.0)
    old = tl.load(OLD + offs, mask=act, other=0.0)
    lr = lp - old
    r = tl.exp(tl.minimum(tl.maximum(lr, -clamp), clamp))
    g = -tl.where(r <= hi, pos, zero) - tl.where((r >= lo) & (r <= c), neg, zero)
    g = tl.where(tl.abs(lr) <= clamp, g * r, zero)
    pg = -pos * tl.minimum(r, hi) - neg * tl.minimum(tl.maximum(r, lo), c)
    kl = zero
    bad_ref = zero
    if HAS_REF:
        ref = tl.load(REF + offs, mask=act, other=0.0)
        kl, dk = _kl_and_grad(lp, ref, KL_CODE, KL_LOG, KL_VAL)
        g += kl_coef * w * dk
        bad_ref = _bad(ref)
    ent = zero
    if HAS_ENT:
        ent = tl.load(ENT + offs, mask=act, other=0.0)
    tl.store(DLP + offs, g, mask=m)
    tl.store(DENT + offs, -ent_coef * w, mask=m)
    row = PARTS_PTR + pid * NPARTS
    tl.store(row + 0, tl.sum(pg, axis=0))
    tl.store(row + 1, tl.sum(w * kl, axis=0))
    tl.store(row + 2, tl.sum(w * ent, axis=0))
    tl.store(row + 3, tl.sum(w, axis=0))
    tl.store(row + 4, tl.sum(w * r, axis=0))
    tl.store(row + 5, tl.sum(-w * lr, axis=0))
    tl.store(row + 6, tl.sum(tl.where(r > hi, wpos, zero), axis=0))
    tl.store(row + 7, tl.sum(tl.where(r < lo, wneg, zero), axis=0))
    tl.store(row + 8, tl.sum(tl.where(r > c, wneg, zero), axis=0))
    tl.store(row + 9, tl.sum(tl.where(act, _bad(lp), zero), axis=0))
    tl.store(row + 10, tl.sum(tl.where(act, _bad(old), zero), axis=0))
    tl.store(row + 11, tl.sum(tl.where(act, bad_adv, zero), axis=0))
    tl.store(row + 12, tl.sum(tl.where(act, bad_ref, zero), axis=0))
    tl.store(row + 13, tl.sum(tl.where(act, _bad(ent), zero), axis=0))
    weighted = m & (w != 0.0)
    tl.store(row + 14, tl.min(tl.where(weighted, r, float("inf")), axis=0))
    tl.store(row + 15, tl.max(tl.where(weighted, r, float("-inf")), axis=0))


def fused(x: PolicyInputs, params):
    """PolicyInputs of [N] tensors (fp32/fp64) -> (parts [blocks, len(PARTS)] float64, d/d lp, d/d entropy)."""
    lp = x.logprobs
    n = lp.shape[0]
    dlp, dent = torch.empty_like(lp), torch.empty_like(lp)
    blocks = max(1, triton.cdiv(n, BLOCK))
    parts = torch.empty(blocks, len(PARTS), dtype=lp.dtype, device=lp.device)
    scalars = torch.tensor([*params.bounds, params.kl_coef, params.entropy_coef, LOG_RATIO_CLAMP], dtype=lp.dtype,
                           device=lp.device)
    args = [t if t is not None else lp for t in (lp, x.old_logprobs, x.entropy, x.ref_logprobs, *x.terms)]
    _policy_loss_kernel[(blocks,)](*args, dlp, dent, parts, scalars, n, HAS_ENT=x.entropy is not None,
                                   HAS_REF=x.ref_logprobs is not None, KL_CODE=params.kl_code, KL_LOG=KL_LOG_CLAMP,
                                   KL_VAL=KL_VALUE_CLAMP, NPARTS=len(PARTS), BLOCK=BLOCK)
    return parts.to(torch.float64), dlp, dent
