"""numba CPU kernels of logprob_entropy: parallel over rows, one online pass over the vocabulary per row.

Per row (z = x / T) the forward keeps a running shift m (the max of the first block, raised only when a later
block would overflow its sums, see _RESHIFT), s = Σ exp(z - m) and u = Σ exp(z - m)(z - m), so that
lse = m + log s, H = log s - u / s and Σ p z = m + u / s; the backward re-reads the row once:
dz_j = g_lp (1[j = y] - p_j) - g_H p_j (z_j - Σ p z), dx = dz / T.

fp32 rows use the vectorisable exp of _numba_math (~2 ulp); fp64 rows use math.exp (gradcheck).
fp16/bf16 logits are widened to fp32 a bounded block of rows at a time by the launcher (never [N, V] fp32).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from ._checks import out_dtype
from ._numba_math import exp_f32

BLOCK = 1024  # columns per inner block (the backward's scratch buffers are per row, in cache)
HALF_CHUNK_ELEMS = 1 << 24  # fp16/bf16: rows widened to fp32 at a time, ~64 MB of scratch
_REDUCE = {"reassoc", "nsz"}  # lets LLVM vectorise the block sums (reassociation only; inf/nan semantics kept)


@numba.njit(inline="always")
def _exp_f32(d):
    """exp(d) in fp32 (vectorisable); -inf gives ~0, arguments above 88 give e^88."""
    return exp_f32(min(max(d, np.float32(-87.0)), np.float32(88.0)))


@numba.njit(inline="always")
def _exp_f64(d):
    return math.exp(min(d, 709.0))


# A block is summed against the running shift m without looking for its own max first (that scalar pass cost as
# much as the exps): exps of z - m up to ~69 are exact enough in fp32 and their block sum stays below this bound.
# A block whose sum reaches it (a logit more than ~69 above m, or inf/NaN) is redone the classic way: its max
# becomes the new shift and the running sums are rescaled.
_RESHIFT = 2.0**100


def _make_kernels(exp, dtype):
    """Forward and backward kernels for one compute dtype (fp32: fast exp, fp64: math.exp)."""

    @numba.njit(inline="always", fastmath=_REDUCE)
    def block_sums(xb, n, inv_t, mb):
        """(Σ e, Σ e·(z - mb)) over a block, e = exp(z - mb), z = x / T: one loop, no stores."""
        bs, bu = dtype(0.0), dtype(0.0)
        for j in range(n):
            d = xb[j] * inv_t - mb
            e = exp(d)
            bs += e
            bu += e * (d if d > dtype(-1e30) else dtype(0.0))  # -inf logits: nothing
        return bs, bu

    @numba.njit(inline="always")
    def block_max(xb, n, inv_t):
        bm = dtype(-np.inf)
        for j in range(n):
            bm = max(bm, xb[j] * inv_t)
        return bm

    @numba.njit(parallel=True, fastmath=_REDUCE, cache=True)
    def forward(x, targets, inv_t, ignore_index, lp, ent, lse, mz):
        n_rows, vocab = x.shape
        for i in numba.prange(n_rows):
            y = targets[i]
            if y == ignore_index:
                lp[i] = ent[i] = lse[i] = mz[i] = 0.0
                continue
            row = x[i]
            m, s, u = -np.inf, 0.0, 0.0  # running shift and sums in fp64; the block work in `dtype`
            for j0 in range(0, vocab, BLOCK):
                n = min(BLOCK, vocab - j0)
                xb = row[j0:j0 + n]
                bs, bu = dtype(_RESHIFT), dtype(0.0)
                if m > -np.inf:
                    bs, bu = block_sums(xb, n, inv_t, dtype(m))
                if not bs < dtype(_RESHIFT):  # first block, a much larger logit, or inf/NaN: shift to the max
                    bm = block_max(xb, n, inv_t)
                    if bm > m:  # rescale the running sums to the new max
                        if s > 0.0:
                            a = math.exp(m - bm)
                            u = a * (u + (m - bm) * s)
                            s = a * s
                        m = float(bm)
                    if m == -np.inf:  # only -inf logits so far: nothing to add
                        continue
                    bs, bu = block_sums(xb, n, inv_t, dtype(m))
                s += bs
                u += bu
            log_s = math.log(s)
            lse[i] = m + log_s
            mz[i] = m + u / s
            lp[i] = row[y] * inv_t - lse[i]
            ent[i] = log_s - u / s

    @numba.njit(parallel=True, fastmath=_REDUCE, cache=True)
    def backward(x, targets, g_lp, g_h, lse, mz, inv_t, ignore_index, dx):
        n_rows, vocab = x.shape
        for i in numba.prange(n_rows):
            y = targets[i]
            out = dx[i]
            if y == ignore_index:
                for j in range(vocab):
                    out[j] = 0.0
                continue
            row = x[i]
            z = np.empty(BLOCK, dtype)
            p = np.empty(BLOCK, dtype)
            a, b = dtype(g_lp[i] * inv_t), dtype(g_h[i] * inv_t)
            c, shift = dtype(mz[i]), dtype(lse[i])
            for j0 in range(0, vocab, BLOCK):
                n = min(BLOCK, vocab - j0)
                xb, ob = row[j0:j0 + n], out[j0:j0 + n]
                for j in range(n):
                    zj = xb[j] * inv_t
                    z[j] = zj
                    p[j] = exp(zj - shift)
                for j in range(n):  # reads only the scratch: dx may alias x (in place), which would block vectors
                    d = z[j] - c
                    ob[j] = -(a + b * d) * p[j] if d > dtype(-1e30) else dtype(0.0)  # -inf logits: no gradient
            if 0 <= y < vocab:
                out[y] += a

    return forward, backward


_F32 = _make_kernels(_exp_f32, np.float32)
_F64 = _make_kernels(_exp_f64, np.float64)


def _kernels(dtype: torch.dtype):
    return _F64 if dtype == torch.float64 else _F32


def _row_chunks(x: torch.Tensor):
    """Row ranges; fp16/bf16 rows are widened to fp32 a bounded chunk at a time."""
    n, v = x.shape
    step = n if x.dtype in (torch.float32, torch.float64) else max(1, HALF_CHUNK_ELEMS // max(v, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, n, max(step, 1))]


def _as_compute(x: torch.Tensor) -> np.ndarray:
    """A numpy view (fp32/fp64) or a widened fp32 copy (fp16/bf16) of a row chunk; unit column stride."""
    if x.dtype in (torch.float32, torch.float64):
        return x.detach().numpy()
    return x.detach().float().numpy()


def forward(x: torch.Tensor, targets: torch.Tensor, temperature: float, ignore_index: int):
    """x [N, V] (column stride 1) -> (lp, ent, lse, mz), each [N] in fp32 (fp64 for fp64 input)."""
    n = x.shape[0]
    acc = out_dtype(x.dtype)
    outs = [torch.empty(n, dtype=acc) for _ in range(4)]
    fwd, _ = _kernels(x.dtype)
    tg = targets.detach().numpy()
    for r0, r1 in _row_chunks(x):
        xc = _as_compute(x[r0:r1])
        fwd(xc, tg[r0:r1], xc.dtype.type(1.0 / temperature), ignore_index,
            *(o[r0:r1].numpy() for o in outs))
    return tuple(outs)


def backward(x, targets, g_lp, g_h, lse, mz, temperature: float, ignore_index: int, out: torch.Tensor):
    """Write d(loss)/dx into `out` [N, V] (x's dtype; may be x itself)."""
    _, bwd = _kernels(x.dtype)
    tg = targets.detach().numpy()
    vecs = [t.detach().numpy() for t in (g_lp, g_h, lse, mz)]
    for r0, r1 in _row_chunks(x):
        xc = _as_compute(x[r0:r1])
        direct = out.dtype in (torch.float32, torch.float64)
        dx = out[r0:r1].numpy() if direct else np.empty_like(xc)
        bwd(xc, tg[r0:r1], *(v[r0:r1] for v in vecs), xc.dtype.type(1.0 / temperature), ignore_index, dx)
        if not direct:
            out[r0:r1].copy_(torch.from_numpy(dx))
