"""Argument checks shared by the kernels: clear errors for wrong shapes, dtypes, devices and targets."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .spec import BACKENDS

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class LogprobEntropyParams:
    """Scalar hyper-parameters of the log-prob/entropy kernels."""

    temperature: float = 1.0
    ignore_index: int = -100

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 1e-30:
            raise ValueError(f"temperature must be a finite number >= 1e-30 (1/T must fit fp32), got {t!r}")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise TypeError(f"ignore_index must be an int, got {self.ignore_index!r}")


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 results from fp16/bf16/fp32 inputs; fp64 inputs keep fp64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_matrix(name: str, x, rows: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} has {x.shape[0]} rows, expected {rows}")


def check_targets(targets, n: int, vocab: int, device: torch.device, ignore_index: int) -> None:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.dim() != 1 or targets.shape[0] != n:
        raise ValueError(f"targets must have shape [{n}] (one per row), got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets must be int64 or int32, got {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"targets are on {targets.device} but the logits on {device}")
    bad = ((targets < 0) | (targets >= vocab)) & (targets != ignore_index)
    if n and bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"targets[{i}] = {int(targets[i])} is outside [0, {vocab}) and is not "
                         f"ignore_index ({ignore_index})")


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> triton on CUDA, numba on CPU; an explicit backend must suit the device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "numba" if device.type == "cpu" else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"the numba backend runs on CPU tensors, got a tensor on {device}")
    if backend == "triton" and device.type != "cuda" and not _triton_interpreter():
        raise ValueError(f"the triton backend runs on CUDA tensors (or CPU with TRITON_INTERPRET=1), got {device}")
    return backend


def _triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
