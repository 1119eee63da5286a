"""Rows for the peers (verl, Liger-Kernel) beside our kernels in the bench suites, and every row's agreement
with an fp64 reference.

A peer is the installed package, imported (no peer code is copied here). A peer that cannot run gives a row
anyway: `unavailable` records it with extra_info["status"] ("not installed: verl", "needs CUDA") and no time,
and bench/ratios.py and bench/report.py print that status in place of the time, never drop the row.
"""
from __future__ import annotations

import importlib

import torch

from arpo_kernels.reference import logprob_entropy_reference


def import_peer(module: str, dist: str):
    """(module, None) when `module` imports, else (None, "not installed: <dist>[ (missing <dep>)]")."""
    try:
        return importlib.import_module(module), None
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        own = missing == module.split(".")[0] or not missing
        return None, f"not installed: {dist}" + ("" if own else f" (missing {missing})")


def unavailable(benchmark, status: str) -> None:
    """A row without a time. pytest-benchmark writes only benchmarks that ran, so a no-op runs once; its time
    is meaningless and the reports show `status` instead."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info["status"] = status


def _err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref).abs().max()) if x.numel() else 0.0


def logprob_entropy_errors(logits, targets, logprobs, entropy=None, grad=None, rows: int = 256,
                           weight=None) -> dict:
    """Max abs error of (logprobs [N], entropy [N], grad of Σ logprobs + Σ entropy [N, V]) against
    arpo_kernels.reference in fp64, `rows` rows at a time (an fp64 copy of the full logits would not fit).
    With `weight` [V, H], `logits` are hidden states [N, H] and the reference runs on hidden @ weight.T
    (logprobs and entropy only). A provider without entropy (entropy=None) is checked on logprobs only."""
    err = {"err_logprobs": 0.0, **({} if entropy is None else {"err_entropy": 0.0})}
    if grad is not None:
        err["err_grad"] = 0.0
    w64 = None if weight is None else weight.detach().double()
    for i in range(0, logits.shape[0], rows):
        x = logits[i:i + rows].detach().double()
        x = (x @ w64.T if w64 is not None else x).requires_grad_(grad is not None)
        with torch.set_grad_enabled(grad is not None):
            lp, ent = logprob_entropy_reference(x, targets[i:i + rows])
            if grad is not None:
                (lp.sum() + ent.sum()).backward()
                err["err_grad"] = max(err["err_grad"], _err(grad[i:i + rows], x.grad))
        err["err_logprobs"] = max(err["err_logprobs"], _err(logprobs[i:i + rows], lp.detach()))
        if entropy is not None:
            err["err_entropy"] = max(err["err_entropy"], _err(entropy[i:i + rows], ent.detach()))
    return {k: float(f"{v:.2e}") for k, v in err.items()}
