"""The "torch" backend of logprob_entropy / linear_logprob_entropy: the fused kernels' math in plain torch ops, on
any device, a bounded chunk of rows at a time. Same interface as the numba and Triton modules:

    forward(x, targets, T, ignore_index)                       -> lp, ent, lse, mz   ([N] each, fp32 / fp64)
    backward(x, targets, g_lp, g_h, lse, mz, T, ignore_index, out)   writes d/dx into out [N, V]

with z = x / T, lse = logsumexp(z), mz = Σ p z (p = softmax(z)), lp = z_y - lse, H = lse - mz, and
d/dz_j = g_lp (1[j = y] - p_j) - g_H p_j (z_j - mz). Only lse and mz are kept for the backward, which recomputes p.
A chunk holds at most ``CHUNK_ELEMS`` elements, so the temporaries (z and p of one chunk, in fp32) stay a few tens
of MB whatever N is: no [N, V] tensor beyond the logits and their gradient (the autograd chain of the reference,
log_softmax -> exp -> product, keeps several).
"""
from __future__ import annotations

import torch

from ._checks import out_dtype

CHUNK_ELEMS = 1 << 22  # 4M elements: 16 MB per fp32 temporary


def _chunks(x: torch.Tensor):
    n, v = x.shape
    step = max(1, CHUNK_ELEMS // max(v, 1))
    return [(r0, min(n, r0 + step)) for r0 in range(0, n, step)]


def _z(x: torch.Tensor, temperature: float) -> torch.Tensor:
    return x.to(out_dtype(x.dtype)) / temperature  # a fresh tensor: safe to modify in place


def _p_times_z(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * z, torch.zeros((), dtype=z.dtype, device=z.device))  # -inf logits: 0, not nan


def forward(x: torch.Tensor, targets: torch.Tensor, temperature: float, ignore_index: int):
    n = x.shape[0]
    outs = [torch.empty(n, dtype=out_dtype(x.dtype), device=x.device) for _ in range(4)]
    lp, ent, lse, mz = outs
    for r0, r1 in _chunks(x):
        z = _z(x[r0:r1], temperature)
        t = targets[r0:r1]
        valid = t != ignore_index
        top = z.amax(-1)
        z.sub_(top[:, None])  # shifted by the row max: H = lse - Σpz of two small numbers, not of two large ones
        lse_c = torch.logsumexp(z, dim=-1)
        p = torch.exp(z - lse_c[:, None])
        mz_c = _p_times_z(p, z).sum(-1)
        zy = z.gather(1, torch.where(valid, t, 0).long()[:, None]).squeeze(1)
        lse[r0:r1], mz[r0:r1] = lse_c + top, mz_c + top
        lp[r0:r1] = torch.where(valid, zy - lse_c, 0.0)
        ent[r0:r1] = torch.where(valid, lse_c - mz_c, 0.0)
    return lp, ent, lse, mz


def backward(x, targets, g_lp, g_h, lse, mz, temperature: float, ignore_index: int, out: torch.Tensor) -> None:
    for r0, r1 in _chunks(x):
        z = _z(x[r0:r1], temperature)
        t = targets[r0:r1]
        valid = t != ignore_index
        a = torch.where(valid, g_lp[r0:r1], 0.0)[:, None]
        b = torch.where(valid, g_h[r0:r1], 0.0)[:, None]
        p = torch.exp(z - lse[r0:r1, None])
        # d/dz = -p (a + b (z - mz)) + a 1[j = y]   (z becomes the gradient in place)
        grad = z.sub_(mz[r0:r1, None]).mul_(b).add_(a).mul_(p).neg_()
        grad = torch.where(p > 0, grad, 0.0)  # -inf logits: p = 0, no gradient (not nan from 0 * inf)
        grad.scatter_add_(1, torch.where(valid, t, 0).long()[:, None], a)
        out[r0:r1] = grad / temperature
