"""DeepSpeed ZeRO (stages 0-3) data-parallel backend of the trainer (``train.deepspeed``), with the interface of
``optim.TorchBackend``. Verified on CPU with gloo and 2 ranks (deepspeed 0.19); NCCL on CUDA.

- The JSON config is generated from ``TrainConfig`` (``deepspeed_config``): micro-batch 1 and gradient
  accumulation 1, because the trainer accumulates a variable number of token-budgeted micro-batches itself:
  ``set_gradient_accumulation_boundary`` marks the last micro-batch of each optimiser step, and the gradient
  is the mean over ranks of each rank's summed micro-batch gradients (each rank's loss is normalised over its
  own mini-batch, as in verl).
- ZeRO-2/3 reduce in every backward, so every rank must run the same number of micro-batches:
  ``align_micro_batches`` pads with zero-weight copies (ZeRO-2 otherwise aborts in gloo, ZeRO-3 hangs).
- Client AdamW; the learning rate is set per training step from ``optim.lr_factor`` (DeepSpeed would step a
  client scheduler once per optimiser step).
- Full weights for ``save_pretrained`` and for the rollout engine are gathered with
  ``deepspeed.zero.GatheredParameters`` (a no-op below stage 3); the engine keeps its own plain copy, so
  rollouts and rank-0 evaluation never run collective forwards.
- DeepSpeed JIT-compiles a shared-memory all-reduce op at start-up that only tensor-parallel inference uses
  (25-70 s on 2 cores); it is skipped.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import warnings
from pathlib import Path

import torch

from arpo_kernels.hf import lm_head_weight

from ..config import ARPOConfig
from ..models import pick_device
from .checkpoint import STATE_FILE, save_policy
from .dist import Dist
from .microbatch import MicroBatch, zero_weight_copy
from .optim import lr_factor, make_optimizer
from .policy import PolicyLogprobs

DS_TAG = "state"


def _import_deepspeed():
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r".*(all_gather_into_tensor|reduce_scatter_tensor).*")
    try:
        import deepspeed
    except ImportError as err:
        raise RuntimeError(f"train.deepspeed needs the deepspeed package (pip install deepspeed): {err}") from None
    # `import deepspeed.comm.torch` would bind the torch package (the name is shadowed there): use importlib
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    return deepspeed


def init_deepspeed_dist(cfg: ARPOConfig, rank: int, world: int, local_rank: int) -> Dist:
    """Initialise the process group through DeepSpeed (gloo on CPU, NCCL on CUDA) and check the batch split."""
    deepspeed = _import_deepspeed()
    device = pick_device(local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    t = cfg.train
    if t.batch_size % world or t.mini_batch_size % world:
        raise ValueError(f"train.batch_size ({t.batch_size}) and train.mini_batch_size ({t.mini_batch_size}) must "
                         f"be divisible by the number of ranks ({world})")
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def deepspeed_config(cfg: ARPOConfig) -> dict:
    """The DeepSpeed JSON config of a run."""
    t = cfg.train
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": {"stage": t.zero_stage},
        "bf16": {"enabled": t.bf16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedBackend:
    def __init__(self, policy: PolicyLogprobs, cfg: ARPOConfig, dist: Dist):
        deepspeed = _import_deepspeed()
        self.cfg, self.dist, self.kernel_backend = cfg.train, dist, cfg.train.kernel_backend
        self.stage = cfg.train.zero_stage
        optimizer = make_optimizer([p for p in policy.parameters() if p.requires_grad], cfg.train)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=policy, optimizer=optimizer,
                                                                 config=deepspeed_config(cfg))
        if self.stage == 3:  # the head weight is read directly, not through its module's forward: gather it
            deepspeed.zero.register_external_parameter(self.engine.module, lm_head_weight(policy.model))
        self._deepspeed = deepspeed
        self.train_step = 0
        self._set_lr()

    # ---- the interface of optim.TorchBackend ------------------------------------------------------------
    @property
    def policy(self) -> PolicyLogprobs:
        return self.engine.module

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def forward(self, mb: MicroBatch, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        self.engine.module.train(train)
        return self.engine(mb.to(self.dist.device))

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        """``last``: this micro-batch ends the optimiser step (gradients are reduced across ranks then)."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> float:
        if self.stage == 0:  # DeepSpeed records no norm with a client optimizer at stage 0; grads are reduced now
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            self.engine.step()
        else:
            self.engine.step()
            norm = float(self.engine.get_global_grad_norm())
        return norm if math.isfinite(norm) else math.nan

    def schedule_step(self) -> None:
        self.train_step += 1
        self._set_lr()

    def _set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(self.train_step, self.cfg)

    def align_micro_batches(self, batches: list[list[MicroBatch]]) -> list[list[MicroBatch]]:
        """Pad every mini-batch to the largest micro-batch count any rank has for it (zero-weight copies)."""
        counts = torch.tensor([len(b) for b in batches], dtype=torch.int64)
        torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.MAX)
        return [b + [zero_weight_copy(b[0])] * (int(n) - len(b)) for b, n in zip(batches, counts.tolist())]

    @contextlib.contextmanager
    def full_weights(self):
        """Inside: every rank's model holds the full parameters (ZeRO-3 gathers them)."""
        with self._deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            yield self.model

    def save_checkpoint(self, directory: Path, state: dict, tokenizer) -> None:
        """Every rank: DeepSpeed's partitioned states into ``directory/deepspeed``; rank 0: the policy and state."""
        self.engine.save_checkpoint(str(directory / "deepspeed"), tag=DS_TAG, client_state={"step": state["step"]})
        with self.full_weights() as model:
            full = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.dist.is_main:
            save_policy(directory / "policy", model, tokenizer, state_dict=full)
            torch.save({**state, "train_step": self.train_step, "zero_stage": self.stage}, directory / STATE_FILE)

    def load_checkpoint(self, directory: Path, state: dict) -> None:
        if "zero_stage" not in state:
            raise ValueError(f"{directory}: written without DeepSpeed; resume it with train.deepspeed = false")
        path, _ = self.engine.load_checkpoint(str(directory / "deepspeed"), tag=DS_TAG)
        if path is None:
            raise FileNotFoundError(f"{directory / 'deepspeed'}: no DeepSpeed checkpoint (tag {DS_TAG!r})")
        self.train_step = int(state["train_step"])
        self._set_lr()
