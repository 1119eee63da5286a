"""numba CPU kernel of the fused policy-loss pass: chunks of tokens in parallel, each writing its gradients and
one row of partial sums (summed afterwards in a fixed order, so results do not depend on thread timing).

Same per-token math as _torch_policy_loss.py. The kernel reads a token's terms through a loader compiled into it:
``packed`` reads the five spec.TokenTerms arrays; ``flat`` builds the terms of a flat token inside the kernel from
its advantage and its weight (spec.FlatTerms: the aggregation weight of every masked token for token-mean, or
per-token weights), exactly as ``flat_terms`` would, so the flat form makes no [N] temporaries and reads 13 bytes
a token instead of 28 (fp32 with a bool mask). The token loop is branch-free (unconditional loads, then selects);
fp32 inputs use the vectorisable exp of _numba_math, fp64 inputs math.exp (gradcheck). Tokens that do not count
contribute nothing: their values (NaN included) are selected away, never used. d loss / d entropy is written only
when an entropy is given.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch

from ._numba_math import exp_f32
from .spec import KL_LOG_CLAMP, KL_VALUE_CLAMP, LOG_RATIO_CLAMP, PARTS, FlatTerms, PolicyInputs, TokenTerms

CHUNK = 16384
BLOCK = 1024
# Below this many tokens the kernel runs on the calling thread alone. The pass is light (~1.6 ms per 1M fp32 tokens
# on one core here) and a fork-join over the pool waits for its slowest thread: on the shared 2-core machines,
# under load, N=1M took 3.5-9.5 ms (mean of 5) on one thread vs 6.2-11 ms on two, measured side by side.
PARALLEL_MIN_TOKENS = 1 << 22
_FLAGS = {"reassoc", "nsz"}  # vectorised sums; NaN/inf semantics kept (they are counted, not assumed away)


@numba.njit(inline="always")
def _exp_f64(x):
    return math.exp(x)


def _loaders(zero):
    """Per-token terms (counts, adv_pos, adv_neg, weight, weight_pos, weight_neg) of token i, one loader per form;
    a token that does not count reads as zeros."""

    @numba.njit(inline="always")
    def packed(t, i):  # t = the five TokenTerms arrays
        pos, neg, w, wpos, wneg = t[0][i], t[1][i], t[2][i], t[3][i], t[4][i]
        act = (w != zero) | (pos != zero) | (neg != zero)
        return (act, pos if act else zero, neg if act else zero, w, wpos if act else zero,
                wneg if act else zero)

    @numba.njit(inline="always")
    def split(wi, a):  # the terms of a flat token (one copy), as policy_loss.flat_terms builds them
        a = a if wi != zero else zero  # tokens without weight get no terms, whatever they hold
        wa = wi * a
        # a NaN/inf advantage stays in both, so the loss kernel reports it
        return (wi != zero, zero if a < zero else wa, zero if a > zero else wa, wi, wi if a > zero else zero,
                wi if a < zero else zero)

    @numba.njit(inline="always")
    def flat_masked(t, i):  # t = (mask uint8 [N], advantages [N], weight of a masked token [1])
        w0, m, a = t[2][0], t[0][i], t[1][i]  # every load unconditional: selects, no gathers
        return split(w0 if m != 0 else zero, a)

    @numba.njit(inline="always")
    def flat_weighted(t, i):  # t = (weights [N], advantages [N])
        return split(t[0][i], t[1][i])

    return {"packed": packed, "flat_masked": flat_masked, "flat_weighted": flat_weighted}


def _make_kernel(exp, dtype, has_ent, has_ref, kl_code, form):
    """The fused kernel for one compute dtype (fp32: polynomial exp, fp64: math.exp) and one loader. Each chunk is
    walked in blocks of four simple loops that vectorise: the exps; the gradients (element-wise, the only stores);
    the sums (no stores, so LLVM needs no run-time alias check and there is one vectorised path: the order of the
    sums does not depend on where the arrays sit in memory); the ratio min/max."""
    one, zero, big = dtype(1.0), dtype(0.0), dtype(np.inf)
    kl_log, kl_val = dtype(KL_LOG_CLAMP), dtype(KL_VALUE_CLAMP)
    sentinel = np.array([np.finfo(dtype).max, -np.finfo(dtype).max], dtype)
    itype = np.int32 if dtype == np.float32 else np.int64
    top, bottom = sentinel.view(itype)  # the bits of ±max, the identities of the ratio min/max
    load = _loaders(zero)[form]

    @numba.njit(inline="always")
    def kl(x, z, e):
        """(KL, d KL / d lp) of one token; e = exp(clamp(z - x)) for low_var_kl."""
        if kl_code == 1:
            return x - z, one
        if kl_code == 2:
            return dtype(0.5) * (x - z) * (x - z), x - z
        d = z - x
        k0 = e - min(max(d, -kl_log), kl_log) - one
        return min(max(k0, -kl_val), kl_val), (one - e) if ((abs(d) <= kl_log) & (k0 <= kl_val)) else zero

    @numba.njit
    def block_minmax(terms, rbits, b0, nb, rmin, rmax):
        """Ratio min/max over the block's tokens with a weight, on the ratios' bits: ratios are > 0, and positive
        floats order as their bits do, so integer min/max (which vectorise; float ones do not here) give them."""
        for j in range(nb):
            act = load(terms, np.uint64(b0 + j))[3] != zero
            rmin = min(rmin, rbits[j] if act else top)
            rmax = max(rmax, rbits[j] if act else bottom)
        return rmin, rmax

    @numba.njit(parallel=True, fastmath=_FLAGS, cache=True)
    def kernel(lp, old, ent, ref, terms, lo, hi, c, kl_coef, ent_coef, clamp, dlp, dent, parts):
        n = lp.shape[0]
        for ci in numba.prange(parts.shape[0]):
            rb = np.empty(BLOCK, dtype)  # ratio per token of the block
            rbits = rb.view(itype)
            eb = np.empty(BLOCK, dtype)  # exp(ref - lp) per token (low_var_kl)
            s_pg = s_kl = s_ent = s_w = s_wr = s_nlr = s_hi = s_lo = s_du = zero
            b_lp = b_old = b_adv = b_ref = b_ent = zero
            rmin, rmax = top, bottom
            for b0 in range(ci * CHUNK, min(n, (ci + 1) * CHUNK), BLOCK):
                nb = min(BLOCK, n - b0)
                for j in range(nb):
                    i = np.uint64(b0 + j)  # unsigned: no wrap-around check, contiguous vector loads
                    act = load(terms, i)[0]
                    x, y = lp[i], old[i]
                    lr = (x - y) if act else zero
                    rb[j] = exp(min(max(lr, -clamp), clamp))
                if has_ref and kl_code == 0:
                    for j in range(nb):
                        i = np.uint64(b0 + j)  # unsigned: no wrap-around check, contiguous vector loads
                        act = load(terms, i)[0]
                        x, z = lp[i], ref[i]
                        d = (z - x) if act else zero
                        eb[j] = exp(min(max(d, -kl_log), kl_log))
                for j in range(nb):  # gradients
                    i = np.uint64(b0 + j)  # unsigned: no wrap-around check, contiguous vector loads
                    act, pos, neg, wi, wpos, wneg = load(terms, i)
                    x, y = lp[i], old[i]
                    x = x if act else zero
                    y = y if act else zero
                    r = rb[j]
                    g = -(pos if r <= hi else zero) - (neg if ((r >= lo) & (r <= c)) else zero)
                    g = g * r if abs(x - y) <= clamp else zero
                    if has_ref:
                        z = ref[i]
                        g += kl_coef * wi * kl(x, z if act else zero, eb[j])[1]
                    dlp[i] = g
                    if has_ent:
                        dent[i] = -ent_coef * wi
                for j in range(nb):  # sums
                    i = np.uint64(b0 + j)  # unsigned: no wrap-around check, contiguous vector loads
                    act, pos, neg, wi, wpos, wneg = load(terms, i)
                    sign_ok = (pos >= zero) & (neg <= zero)
                    adv_chk = (pos + neg + wi + wpos + wneg) if sign_ok else big
                    x, y = lp[i], old[i]
                    x = x if act else zero
                    y = y if act else zero
                    r = rb[j]
                    s_pg += -pos * min(r, hi) - neg * min(max(r, lo), c)
                    if has_ref:
                        z = ref[i]
                        z = z if act else zero
                        s_kl += wi * kl(x, z, eb[j])[0]
                        b_ref += zero if abs(z) < big else one
                    if has_ent:
                        h = ent[i]
                        h = h if act else zero
                        s_ent += wi * h
                        b_ent += zero if abs(h) < big else one
                    s_w += wi
                    s_wr += wi * r
                    s_nlr -= wi * (x - y)
                    s_hi += wpos if r > hi else zero
                    s_lo += wneg if r < lo else zero
                    s_du += wneg if r > c else zero
                    b_lp += zero if abs(x) < big else one
                    b_old += zero if abs(y) < big else one
                    b_adv += zero if abs(adv_chk) < big else one
                rmin, rmax = block_minmax(terms, rbits, b0, nb, rmin, rmax)
            mm = np.empty(2, itype)
            mm[0], mm[1] = rmin, rmax
            fmm = mm.view(dtype)
            parts[ci, 0], parts[ci, 1], parts[ci, 2], parts[ci, 3] = s_pg, s_kl, s_ent, s_w
            parts[ci, 4], parts[ci, 5], parts[ci, 6], parts[ci, 7] = s_wr, s_nlr, s_hi, s_lo
            parts[ci, 8], parts[ci, 9], parts[ci, 10], parts[ci, 11] = s_du, b_lp, b_old, b_adv
            parts[ci, 12], parts[ci, 13], parts[ci, 14], parts[ci, 15] = b_ref, b_ent, fmm[0], fmm[1]

    return kernel


_EXP = {torch.float32: (exp_f32, np.float32), torch.float64: (_exp_f64, np.float64)}


@functools.cache
def _kernel(dtype: torch.dtype, has_ent: bool, has_ref: bool, kl_code: int, form: str):
    """One compiled kernel per (dtype, options, loader): the options are compile-time constants, so the token loop
    has no option branches left (compiled on first use, cached on disk by numba)."""
    exp, np_dtype = _EXP[dtype]
    return _make_kernel(exp, np_dtype, has_ent, has_ref, kl_code if has_ref else 0, form)


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


def _terms_arrays(terms) -> tuple[str, tuple]:
    if isinstance(terms, FlatTerms):
        if terms.weight.numel() == 1 and terms.mask is not None:
            return "flat_masked", (terms.mask.numpy(), terms.advantages.numpy(), terms.weight.reshape(1).numpy())
        return "flat_weighted", (terms.weight.numpy(), terms.advantages.numpy())
    return "packed", tuple(t.detach().numpy() for t in terms)


def fused(x: PolicyInputs, params):
    """PolicyInputs of [N] CPU tensors (fp32/fp64; terms a TokenTerms or a FlatTerms) -> (parts [chunks,
    len(PARTS)] float64, d loss / d lp, d loss / d entropy or None when no entropy is given)."""
    lp = x.logprobs
    n = lp.shape[0]
    dlp = torch.empty_like(lp)
    dent = torch.empty_like(lp) if x.entropy is not None else None
    parts = torch.empty(max(1, -(-n // CHUNK)), len(PARTS), dtype=torch.float64)
    arrays = [(t if t is not None else lp).detach().numpy() for t in (lp, x.old_logprobs, x.entropy, x.ref_logprobs)]
    form, terms = _terms_arrays(x.terms)
    scalar = arrays[0].dtype.type
    lo, hi, c = (scalar(min(b, np.finfo(scalar).max)) for b in params.bounds)
    kernel = _kernel(lp.dtype, x.entropy is not None, x.ref_logprobs is not None, params.kl_code, form)
    threads = numba.get_num_threads()
    if n < PARALLEL_MIN_TOKENS:
        numba.set_num_threads(1)  # per calling thread in numba; restored below
    try:
        kernel(*arrays, terms, lo, hi, c, scalar(params.kl_coef), scalar(params.entropy_coef),
               scalar(LOG_RATIO_CLAMP), dlp.numpy(), (dent if dent is not None else dlp).numpy(), parts.numpy())
    finally:
        numba.set_num_threads(threads)
    return parts, dlp, dent
