"""linear_logprob_entropy: logprob_entropy of logits = hidden @ weight.T without materialising [N, V] logits.

Rows are processed in chunks: a [chunk, V] tile of logits is computed with torch.matmul (in the input dtype),
reduced by the fused kernel of the chosen backend, and dropped. The backward recomputes each tile, turns it
into d(loss)/d(logits) in place with the same kernel, and accumulates grad_hidden = dlogits @ weight and
grad_weight += dlogits.T @ hidden (in the weight's dtype, as Liger-Kernel does: for bf16 one rounding per
tile). Peak extra memory: one tile plus grad_weight. Not a fully fused kernel: the GEMMs are cuBLAS/MKL calls around the Triton/numba reduction, so
each tile of logits is written to and read back from memory once per pass (forward, backward).
"""
from __future__ import annotations

import torch

from ._checks import LogprobEntropyParams, check_matrix, check_targets, out_dtype, resolve_backend
from .logprob_entropy import kernel_module

TILE_ELEMENTS = 1 << 27  # default tile: ~128M logits (256 MB in bf16)


def default_chunk_size(vocab: int) -> int:
    """Rows per tile: ~TILE_ELEMENTS logits, a multiple of 128 rows when that many fit (GEMM-friendly)."""
    rows = max(1, TILE_ELEMENTS // max(vocab, 1))
    return rows - rows % 128 if rows >= 128 else rows


def _chunks(n: int, chunk: int):
    return [(r0, min(n, r0 + chunk)) for r0 in range(0, n, chunk)]


class LinearLogprobEntropyFunction(torch.autograd.Function):
    """Chunked fused LM head + log-prob/entropy. Saves hidden, weight, targets and two [N] vectors."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, params: LogprobEntropyParams, chunk: int, backend: str):
        n = hidden.shape[0]
        acc = out_dtype(hidden.dtype)
        lp, ent, lse, mz = (torch.empty(n, dtype=acc, device=hidden.device) for _ in range(4))
        kern = kernel_module(backend)
        for r0, r1 in _chunks(n, chunk):
            tile = hidden[r0:r1] @ weight.T  # [chunk, V]
            outs = kern.forward(tile, targets[r0:r1], params.temperature, params.ignore_index)
            for dst, src in zip((lp, ent, lse, mz), outs):
                dst[r0:r1] = src
        ctx.save_for_backward(hidden, weight, targets, lse, mz)
        ctx.params, ctx.chunk, ctx.backend = params, chunk, backend
        return lp, ent

    @staticmethod
    def backward(ctx, g_lp, g_h):
        hidden, weight, targets, lse, mz = ctx.saved_tensors
        g_lp = torch.zeros_like(lse) if g_lp is None else g_lp.to(lse.dtype).contiguous()
        g_h = torch.zeros_like(lse) if g_h is None else g_h.to(lse.dtype).contiguous()
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # e.g. a frozen LM head
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight) if want_weight else None
        kern, p = kernel_module(ctx.backend), ctx.params
        for r0, r1 in _chunks(hidden.shape[0], ctx.chunk):
            tile = hidden[r0:r1] @ weight.T
            kern.backward(tile, targets[r0:r1], g_lp[r0:r1], g_h[r0:r1], lse[r0:r1], mz[r0:r1],
                          p.temperature, p.ignore_index, tile)  # tile now holds d(loss)/d(logits)
            if want_hidden:
                torch.matmul(tile, weight, out=grad_hidden[r0:r1])
            if want_weight:
                grad_weight.addmm_(tile.T, hidden[r0:r1])  # GEMM accumulates in fp32, rounds once per tile
        return grad_hidden, grad_weight, None, None, None, None


def linear_logprob_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                           temperature: float = 1.0, ignore_index: int = -100, chunk_size: int | None = None,
                           backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [N, H], weight [V, H] (the LM head), targets [N] -> (logprobs [N], entropy [N]) of
    softmax(hidden @ weight.T / T), differentiable in hidden and weight; at most [chunk_size, V] logits exist
    at once (default: ~128M elements)."""
    check_matrix("hidden", hidden)
    check_matrix("weight", weight)
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must be [V, {hidden.shape[1]}] (hidden size {hidden.shape[1]}), "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(f"hidden ({hidden.dtype}, {hidden.device}) and weight ({weight.dtype}, {weight.device}) "
                         "must share dtype and device")
    params = LogprobEntropyParams(float(temperature), ignore_index)
    backend = resolve_backend(backend, hidden.device)
    check_targets(targets, hidden.shape[0], weight.shape[0], hidden.device, ignore_index)
    chunk = default_chunk_size(weight.shape[0]) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return LinearLogprobEntropyFunction.apply(hidden, weight, targets.contiguous(), params, chunk, backend)
