"""Helpers for the kernel tests: the device the Triton backend runs on, and logits of realistic shapes."""
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def device_for(backend: str) -> str:
    return "cpu" if backend in ("numba", "torch") else DEVICE


def make_logits(kind: str, n: int, v: int, dtype=torch.float32, device="cpu", seed=0) -> torch.Tensor:
    """randn: spread logits; peaked: one dominant token per row like a trained model's; uniform: all equal."""
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        x = torch.zeros(n, v, dtype=torch.float64)
    else:
        x = torch.randn(n, v, generator=g, dtype=torch.float64) * 2.0
        if kind == "peaked":
            x[torch.arange(n), torch.randint(0, v, (n,), generator=g)] += 25.0
    return x.to(dtype=dtype, device=device)


def make_targets(n: int, v: int, device="cpu", ignore=(), seed=1) -> torch.Tensor:
    t = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(seed))
    t[list(ignore)] = -100
    return t.to(device)


skip_triton_without_runtime = pytest.mark.skipif(
    not (torch.cuda.is_available() or INTERPRETED), reason="triton needs CUDA or TRITON_INTERPRET=1"
)
