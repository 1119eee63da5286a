"""logprob_entropy: per row, log p(target) and the full-vocabulary entropy of softmax(logits / T), fused.

    logp_y = z_y - lse(z),   H = lse(z) - Σ_j p_j z_j,   z = logits / T
    d/dz_j = g_lp (1[j = y] - p_j) - g_H p_j (z_j - Σ p z),   d/dlogits = d/dz / T

Backends: "triton" (CUDA; CPU under TRITON_INTERPRET=1), "numba" (CPU), "torch" (the same math in torch ops, a
bounded chunk of rows at a time, any device: _torch_logprob_entropy.py), "auto" (triton on CUDA, numba on CPU).
Every backend keeps only lse and Σ p z per row ([N] each) for the backward and writes the gradient once, in the
logits' dtype, optionally into the logits buffer itself (`inplace_grad=True`). Otherwise a CPU gradient of
>= 8 MiB goes into arpo_kernels._memory.gradient_buffer: the previous call's buffer once nobody holds it (already
mapped memory: no page faults), else a fresh one advised for huge pages; `release_gradient_buffers()` drops the
kept buffer. arpo_kernels/reference.py holds the plain autograd chain the tests compare them with.
"""
from __future__ import annotations

import importlib

import torch

from ._checks import LogprobEntropyParams, check_matrix, check_targets, resolve_backend
from ._memory import gradient_buffer

_MODULES = {"numba": "._numba_logprob_entropy", "triton": "._triton_logprob_entropy",
            "torch": "._torch_logprob_entropy"}


def kernel_module(backend: str):
    """The module with forward/backward launchers of a fused backend (imported on first use)."""
    return importlib.import_module(_MODULES[backend], __package__)


class LogprobEntropyFunction(torch.autograd.Function):
    """Autograd wrapper of a fused backend. Saves logits, targets and two [N] vectors, never [N, V] floats."""

    @staticmethod
    def forward(ctx, logits, targets, params: LogprobEntropyParams, backend: str, inplace_grad: bool):
        lp, ent, lse, mz = kernel_module(backend).forward(logits, targets, params.temperature,
                                                          params.ignore_index)
        ctx.save_for_backward(logits, targets, lse, mz)
        ctx.params, ctx.backend, ctx.inplace_grad = params, backend, inplace_grad
        return lp, ent

    @staticmethod
    def backward(ctx, g_lp, g_h):
        logits, targets, lse, mz = ctx.saved_tensors
        g_lp = torch.zeros_like(lse) if g_lp is None else g_lp.to(lse.dtype).contiguous()
        g_h = torch.zeros_like(lse) if g_h is None else g_h.to(lse.dtype).contiguous()
        out = logits if ctx.inplace_grad else gradient_buffer(logits)  # mapped memory when free, see _memory
        kernel_module(ctx.backend).backward(logits, targets, g_lp, g_h, lse, mz, ctx.params.temperature,
                                            ctx.params.ignore_index, out)
        if ctx.inplace_grad:
            # the kernels wrote behind torch's back: bump the version counter (an empty in-place op) so that any
            # other use of the overwritten logits (a saved tensor elsewhere, a second backward) is an error
            logits[:0].zero_()
        return out, None, None, None, None


def logprob_entropy(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                    ignore_index: int = -100, backend: str = "auto",
                    inplace_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V] (fp16/bf16/fp32/fp64), targets [N] int -> (logprobs [N], entropy [N]) in fp32 (fp64 for
    fp64 logits), differentiable in `logits` through both outputs.

    Rows whose target is `ignore_index` give 0 and a zero gradient. With `inplace_grad=True` the gradient is
    written into the logits buffer (saves N*V elements; the logits must not be used after backward).
    """
    check_matrix("logits", logits)
    params = LogprobEntropyParams(float(temperature), ignore_index)
    backend = resolve_backend(backend, logits.device)
    check_targets(targets, logits.shape[0], logits.shape[1], logits.device, ignore_index)
    if logits.shape[1] == 0:
        raise ValueError("logits have an empty vocabulary dimension (V = 0)")
    if inplace_grad and logits.is_leaf and logits.requires_grad:
        raise ValueError("inplace_grad=True overwrites the logits with their gradient: pass logits computed in the "
                         "graph (e.g. hidden @ weight.T), not a leaf tensor")
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return LogprobEntropyFunction.apply(logits, targets.contiguous(), params, backend, inplace_grad)
