"""Triton kernels of logprob_entropy: one program per row, one online pass over the vocabulary.

Same math as the numba kernels (see _numba_logprob_entropy.py): the forward keeps a running max m,
s = Σ exp(z - m) and u = Σ exp(z - m)(z - m) (the shared helper `_online_lse_update`) and writes logp, H,
lse and Σ p z per row; the backward re-reads the row once and writes dx = dz / T in the logits' dtype,
possibly into the logits buffer itself. Computation is in fp32 (fp64 for fp64 logits, for gradcheck).
Runs on CPU tensors under TRITON_INTERPRET=1 (set before triton is imported).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import out_dtype


@triton.jit
def _online_lse_update(z, m, s, u):
    """Fold one block z (masked entries -inf) into the running (m, s, u)."""
    m_new = tl.maximum(m, tl.max(z, axis=0))
    shift = tl.where(m_new > float("-inf"), m_new, 0.0)  # all -inf so far: no NaN from -inf - -inf
    e = tl.exp(z - shift)  # -inf -> 0
    d = tl.where(e > 0, z - shift, 0.0)
    alpha = tl.where(s > 0, tl.exp(m - m_new), 0.0)  # first block, or only -inf before it: nothing to rescale
    delta = tl.where(s > 0, m - m_new, 0.0)  # avoids -inf * 0 before the first block
    return m_new, alpha * s + tl.sum(e, axis=0), alpha * (u + delta * s) + tl.sum(e * d, axis=0)


@triton.jit
def _lpe_fwd_kernel(X_ptr, stride_x, T_ptr, TEMP_ptr, LP_ptr, H_ptr, LSE_ptr, MZ_ptr, V, ignore_index,
                    ACC: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(T_ptr + row).to(tl.int64)
    if y == ignore_index:
        tl.store(LP_ptr + row, 0.0)
        tl.store(H_ptr + row, 0.0)
        tl.store(LSE_ptr + row, 0.0)
        tl.store(MZ_ptr + row, 0.0)
    else:
        x_row = X_ptr + row * stride_x
        inv_t = 1.0 / tl.load(TEMP_ptr).to(ACC)
        m = tl.full((), float("-inf"), ACC)
        s = tl.full((), 0.0, ACC)
        u = tl.full((), 0.0, ACC)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            z = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(ACC) * inv_t
            m, s, u = _online_lse_update(z, m, s, u)
        log_s = tl.log(s)
        z_y = tl.load(x_row + y).to(ACC) * inv_t
        tl.store(LP_ptr + row, z_y - m - log_s)
        tl.store(H_ptr + row, log_s - u / s)
        tl.store(LSE_ptr + row, m + log_s)
        tl.store(MZ_ptr + row, m + u / s)


@triton.jit
def _lpe_bwd_kernel(X_ptr, stride_x, DX_ptr, stride_dx, T_ptr, TEMP_ptr, GLP_ptr, GH_ptr, LSE_ptr, MZ_ptr, V,
                    ignore_index, ACC: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    y = tl.load(T_ptr + row).to(tl.int64)
    x_row = X_ptr + row * stride_x
    dx_row = DX_ptr + row * stride_dx
    if y == ignore_index:
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            tl.store(dx_row + cols, tl.zeros((BLOCK_V,), ACC).to(DX_ptr.dtype.element_ty), mask=cols < V)
    else:
        inv_t = 1.0 / tl.load(TEMP_ptr).to(ACC)
        a = tl.load(GLP_ptr + row).to(ACC) * inv_t
        b = tl.load(GH_ptr + row).to(ACC) * inv_t
        lse = tl.load(LSE_ptr + row).to(ACC)
        mz = tl.load(MZ_ptr + row).to(ACC)
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = cols < V
            z = tl.load(x_row + cols, mask=mask, other=0.0).to(ACC) * inv_t
            p = tl.exp(z - lse)
            d = tl.where(p > 0, z - mz, 0.0)  # -inf logits: p = 0 and no gradient (no inf * 0)
            dz = tl.where(cols == y, a, 0.0) - (a + b * d) * p
            tl.store(dx_row + cols, dz.to(DX_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


# (BLOCK_V, num_warps) of the forward and backward kernels on a GPU; scripts/tune_logprob_entropy.py sweeps them.
# H200, N=16384, V=151936, bf16: this forward took 2.0 ms through logprob_entropy (pytest-benchmark); a variant
# with per-lane running sums took 2.44 ms there at the same config (and 1.87 ms kernel-only at its best,
# (2048, 4), vs 2.12 ms at (8192, 8)). The backward took ~2.5 ms kernel-only for every block >= 2048.
FWD_CONFIG = (8192, 8)
BWD_CONFIG = (8192, 8)


def _launch(config, vocab: int) -> dict:
    block, warps = config if torch.cuda.is_available() else (1024, 4)  # small blocks for the interpreter
    block = min(triton.next_power_of_2(vocab), block)
    return {"BLOCK_V": block, "num_warps": warps if block >= 4096 else 4}


def forward(x: torch.Tensor, targets: torch.Tensor, temperature: float, ignore_index: int):
    """x [N, V] (column stride 1) -> (lp, ent, lse, mz), each [N] in fp32 (fp64 for fp64 input)."""
    n, vocab = x.shape
    acc = out_dtype(x.dtype)
    lp, ent, lse, mz = (torch.empty(n, dtype=acc, device=x.device) for _ in range(4))
    if n:
        temp = torch.full((), temperature, dtype=acc, device=x.device)
        _lpe_fwd_kernel[(n,)](x, x.stride(0), targets, temp, lp, ent, lse, mz, vocab, ignore_index,
                              ACC=_acc(x.dtype), **_launch(FWD_CONFIG, vocab))
    return lp, ent, lse, mz


def backward(x, targets, g_lp, g_h, lse, mz, temperature: float, ignore_index: int, out: torch.Tensor):
    """Write d(loss)/dx into `out` [N, V] (x's dtype, column stride 1; may be x itself)."""
    n, vocab = x.shape
    if n:
        temp = torch.full((), temperature, dtype=lse.dtype, device=x.device)
        _lpe_bwd_kernel[(n,)](x, x.stride(0), out, out.stride(0), targets, temp, g_lp, g_h, lse, mz, vocab,
                              ignore_index, ACC=_acc(x.dtype), **_launch(BWD_CONFIG, vocab))
