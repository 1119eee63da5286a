"""Process-group facts of a run: rank, world size, device, and the few collectives the trainer needs.

A plain ``arpo train`` is one process (rank 0 of 1). Under ``torchrun`` or the ``deepspeed`` launcher
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) with ``--deepspeed``, the process group is initialised by DeepSpeed
(NCCL on CUDA, gloo on CPU) and each rank rolls out its own share of the prompts.
"""
from __future__ import annotations

import dataclasses
import os

import torch


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def on_main(self, fn):
        """``fn()`` run on rank 0 alone; its result, or the exception it raised, on every rank (picklable)."""
        if not self.active:
            return fn()
        box = [None]
        if self.is_main:
            try:
                box[0] = (fn(), None)
            except Exception as err:  # raised below on every rank, rank 0 included
                box[0] = (None, err)
        torch.distributed.broadcast_object_list(box, src=0)
        result, err = box[0]
        if err is not None:
            raise err
        return result

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-key mean over ranks (keys must be the same on every rank; NaN stays NaN)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, (t / self.world).tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)


def launched_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) without one."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def set_deterministic(setting: bool | None, device: torch.device) -> bool:
    """``train.deterministic`` (None = on for CPU, off on CUDA) applied to torch; returns whether it is on.

    On CPU every op the trainer runs then has a deterministic kernel. On CUDA it also fixes the cuBLAS
    workspace (needed for deterministic GEMMs); ops without a deterministic CUDA kernel warn instead of
    failing (``warn_only``): flex attention's backward, Triton kernels with atomics, and NCCL reductions
    under several ranks stay nondeterministic there."""
    on = device.type == "cpu" if setting is None else bool(setting)
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=device.type == "cuda")
    return on
