"""numba CPU kernel of the fused policy-loss pass: chunks of tokens in parallel, each writing its gradients and
one row of partial sums (summed afterwards in a fixed order, so results do not depend on thread timing).

Same per-token math as _torch_policy_loss.py. The token loop is branch-free (selects); fp32 inputs use the
vectorisable exp of _numba_math, fp64 inputs math.exp (gradcheck). Tokens with weight 0 contribute nothing: their values (NaN included) are selected
away, never used.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch

from ._numba_math import exp_f32
from .spec import KL_LOG_CLAMP, KL_VALUE_CLAMP, LOG_RATIO_CLAMP, PARTS, PolicyInputs, TokenTerms

CHUNK = 16384
BLOCK = 1024
_FLAGS = {"reassoc", "nsz"}  # vectorised sums; NaN/inf semantics kept (they are counted, not assumed away)


@numba.njit(inline="always")
def _exp_f64(x):
    return math.exp(x)


@numba.njit(inline="always")
def _active(w, pos, neg, i):
    """Whether token i counts: it has a weight or an advantage term; others are never read."""
    return (w[i] != 0) | (pos[i] != 0) | (neg[i] != 0)


@numba.njit(fastmath={"nnan", "nsz", "reassoc"})
def _block_minmax(rb, w, b0, nb, rmin, rmax, sentinel):
    """Ratio min/max over the active tokens of a block. Kept out of the main loop: float min/max reductions
    only vectorise when NaN may be assumed away, which is safe here (a NaN ratio raises an error anyway)."""
    for j in range(nb):
        act = w[b0 + j] != 0
        rmin = min(rmin, rb[j] if act else sentinel)
        rmax = max(rmax, rb[j] if act else -sentinel)
    return rmin, rmax


def _make_kernel(exp, dtype, has_ent, has_ref, kl_code):
    """The fused kernel for one compute dtype (fp32: polynomial exp, fp64: math.exp). Each chunk is walked in
    blocks: the exps of a block first (simple loops that vectorise), then one select-only pass for the loss,
    gradients and sums, then the ratio min/max."""
    one, zero, big = dtype(1.0), dtype(0.0), dtype(np.inf)
    kl_log, kl_val = dtype(KL_LOG_CLAMP), dtype(KL_VALUE_CLAMP)
    sentinel = dtype(np.finfo(dtype).max)

    @numba.njit(parallel=True, fastmath=_FLAGS, cache=True)
    def kernel(lp, old, ent, ref, adv_pos, adv_neg, w, w_pos, w_neg, lo, hi, c, kl_coef, ent_coef, clamp, dlp, dent,
               parts):
        n = lp.shape[0]
        for ci in numba.prange(parts.shape[0]):
            rb = np.empty(BLOCK, dtype)  # ratio per token of the block
            eb = np.empty(BLOCK, dtype)  # exp(ref - lp) per token (low_var_kl)
            s_pg = s_kl = s_ent = s_w = s_wr = s_nlr = s_hi = s_lo = s_du = zero
            b_lp = b_old = b_adv = b_ref = b_ent = zero
            rmin, rmax = sentinel, -sentinel
            for b0 in range(ci * CHUNK, min(n, (ci + 1) * CHUNK), BLOCK):
                nb = min(BLOCK, n - b0)
                for j in range(nb):
                    i = b0 + j
                    lr = (lp[i] - old[i]) if _active(w, adv_pos, adv_neg, i) else zero
                    rb[j] = exp(min(max(lr, -clamp), clamp))
                if has_ref and kl_code == 0:
                    for j in range(nb):
                        i = b0 + j
                        d = (ref[i] - lp[i]) if _active(w, adv_pos, adv_neg, i) else zero
                        eb[j] = exp(min(max(d, -kl_log), kl_log))
                for j in range(nb):
                    i = b0 + j
                    wi = w[i]
                    act = _active(w, adv_pos, adv_neg, i)
                    pos = adv_pos[i] if act else zero
                    neg = adv_neg[i] if act else zero
                    wpos = w_pos[i] if act else zero
                    wneg = w_neg[i] if act else zero
                    sign_ok = (pos >= zero) & (neg <= zero)
                    adv_chk = (pos + neg + wi + wpos + wneg) if sign_ok else big
                    x = lp[i] if act else zero
                    y = old[i] if act else zero
                    lr = x - y
                    r = rb[j]
                    g = -(pos if r <= hi else zero) - (neg if ((r >= lo) & (r <= c)) else zero)
                    g = g * r if abs(lr) <= clamp else zero
                    s_pg += -pos * min(r, hi) - neg * min(max(r, lo), c)
                    if has_ref:
                        z = ref[i] if act else zero
                        if kl_code == 1:
                            k = x - z
                            dk = one
                        elif kl_code == 2:
                            k = dtype(0.5) * (x - z) * (x - z)
                            dk = x - z
                        else:
                            d = z - x
                            dc = min(max(d, -kl_log), kl_log)
                            e = eb[j]
                            k0 = e - dc - one
                            k = min(max(k0, -kl_val), kl_val)
                            dk = (one - e) if ((abs(d) <= kl_log) & (k0 <= kl_val)) else zero
                        g += kl_coef * wi * dk
                        s_kl += wi * k
                        b_ref += zero if abs(z) < big else one
                    if has_ent:
                        h = ent[i] if act else zero
                        s_ent += wi * h
                        b_ent += zero if abs(h) < big else one
                    dlp[i] = g
                    dent[i] = -ent_coef * wi
                    s_w += wi
                    s_wr += wi * r
                    s_nlr -= wi * lr
                    s_hi += wpos if r > hi else zero
                    s_lo += wneg if r < lo else zero
                    s_du += wneg if r > c else zero
                    b_lp += zero if abs(x) < big else one
                    b_old += zero if abs(y) < big else one
                    b_adv += zero if abs(adv_chk) < big else one
                rmin, rmax = _block_minmax(rb, w, b0, nb, rmin, rmax, sentinel)
            parts[ci, 0], parts[ci, 1], parts[ci, 2], parts[ci, 3] = s_pg, s_kl, s_ent, s_w
            parts[ci, 4], parts[ci, 5], parts[ci, 6], parts[ci, 7] = s_wr, s_nlr, s_hi, s_lo
            parts[ci, 8], parts[ci, 9], parts[ci, 10], parts[ci, 11] = s_du, b_lp, b_old, b_adv
            parts[ci, 12], parts[ci, 13], parts[ci, 14], parts[ci, 15] = b_ref, b_ent, rmin, rmax

    return kernel


_EXP = {torch.float32: (exp_f32, np.float32), torch.float64: (_exp_f64, np.float64)}


@functools.cache
def _kernel(dtype: torch.dtype, has_ent: bool, has_ref: bool, kl_code: int):
    """One compiled kernel per (dtype, options): the options are compile-time constants, so the token loop has
    no option branches left (compiled on first use, cached on disk by numba)."""
    exp, np_dtype = _EXP[dtype]
    return _make_kernel(exp, np_dtype, has_ent, has_ref, kl_code if has_ref else 0)


@numba.njit(parallel=True, cache=True)
def _flat_terms_kernel(adv, w, pos, neg, wpos, wneg):
    zero = w.dtype.type(0.0)
    for i in numba.prange(w.shape[0]):
        wi = w[i]
        a = adv[i] if wi != zero else zero  # tokens without weight get no terms, whatever they hold
        wa = wi * a
        pos[i] = zero if a < zero else wa  # a NaN/inf advantage stays in both, so the loss kernel reports it
        neg[i] = zero if a > zero else wa
        wpos[i] = wi if a > zero else zero
        wneg[i] = wi if a < zero else zero


def flat_terms(advantages: torch.Tensor, weights: torch.Tensor) -> TokenTerms:
    """policy_loss.flat_terms in one parallel pass ([N] CPU tensors of one float dtype)."""
    out = [torch.empty_like(weights) for _ in range(4)]
    _flat_terms_kernel(advantages.numpy(), weights.numpy(), *(t.numpy() for t in out))
    return TokenTerms(out[0], out[1], weights, out[2], out[3])


def fused(x: PolicyInputs, params):
    """PolicyInputs of [N] CPU tensors (fp32/fp64) -> (parts [chunks, len(PARTS)] float64, d/d lp, d/d entropy)."""
    lp = x.logprobs
    n = lp.shape[0]
    dlp, dent = torch.empty_like(lp), torch.empty_like(lp)
    parts = torch.empty(max(1, -(-n // CHUNK)), len(PARTS), dtype=torch.float64)
    arrays = [(t if t is not None else lp).detach().numpy()
              for t in (lp, x.old_logprobs, x.entropy, x.ref_logprobs, *x.terms)]
    scalar = arrays[0].dtype.type
    lo, hi, c = (scalar(min(b, np.finfo(scalar).max)) for b in params.bounds)
    kernel = _kernel(lp.dtype, x.entropy is not None, x.ref_logprobs is not None, params.kl_code)
    kernel(*arrays, lo, hi, c, scalar(params.kl_coef), scalar(params.entropy_coef), scalar(LOG_RATIO_CLAMP),
           dlp.numpy(), dent.numpy(), parts.numpy())
    return parts, dlp, dent
