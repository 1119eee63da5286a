"""Optimisation backends of the trainer: plain torch (AdamW, gradient clipping, warm-up + cosine/constant
schedule, bf16 autocast on CUDA) and DeepSpeed ZeRO (``deepspeed_backend.py``). Both expose

    forward(mb, train=True) -> (logprobs [n], entropy [n])   backward(loss, last)   step() -> grad norm (nan: skipped)
    schedule_step()   lr   policy (the PolicyLogprobs module)   model (the transformers model)
    align_micro_batches(batches)   full_weights() (context)   save_checkpoint(dir, state, tok)   load_checkpoint(dir, state)

The learning-rate schedule is per training step (one rollout batch), like verl's: every optimiser step of a
step's mini-batches and epochs uses that step's rate.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from ..config import TrainConfig
from .checkpoint import STATE_FILE, save_adapter, save_policy
from .microbatch import MicroBatch
from .policy import PolicyLogprobs


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at training step ``step`` (0-based): linear warm-up over ``warmup_steps``,
    then constant or cosine decay to 0 at ``total_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return 1.0
    span = max(cfg.total_steps - cfg.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - cfg.warmup_steps, span) / span))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]  # norms and biases: no weight decay
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


class TorchBackend:
    """Single-process training of ``policy`` with AdamW."""

    def __init__(self, policy: PolicyLogprobs, cfg: TrainConfig, device: torch.device):
        self.policy, self.cfg, self.device = policy, cfg, device
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.kernel_backend = cfg.kernel_backend
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def model(self) -> torch.nn.Module:
        return self.policy.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def autocast(self):
        if self.cfg.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, mb: MicroBatch, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """train=False: eval mode (no dropout), for the no-grad old-log-prob pass."""
        self.policy.train(train)
        with self.autocast():
            return self.policy(mb.to(self.device))

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()  # `last` (end of an optimiser step) matters only to data-parallel backends

    def full_weights(self):
        """Context giving the model with all its parameters (trivially: one process holds them all)."""
        return contextlib.nullcontext(self.model)

    def step(self) -> float:
        """Clip, step and clear the gradients; a non-finite gradient norm skips the update (returns nan)."""
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm if math.isfinite(norm) else math.nan

    def schedule_step(self) -> None:
        self.scheduler.step()

    def align_micro_batches(self, batches: list[list[MicroBatch]]) -> list[list[MicroBatch]]:
        return batches  # one process: nothing to line up

    def save_checkpoint(self, directory: Path, state: dict, tokenizer) -> None:
        """The policy (save_pretrained; with LoRA merged, plus the adapter alone) and the trainer state with
        optimizer and scheduler (with LoRA: of the adapter weights only) into ``directory``."""
        save_policy(directory / "policy", self.model, tokenizer)
        save_adapter(directory, self.model)
        state = {**state, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save(state, directory / STATE_FILE)

    def load_checkpoint(self, directory: Path, state: dict) -> None:
        """Optimizer and scheduler from a checkpoint's state (the policy weights were loaded with the model)."""
        if "optimizer" not in state:
            raise ValueError(f"{directory}: written by a DeepSpeed run; resume it with train.deepspeed = true")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
