"""The policy update of one rollout batch: old (and reference) log-probs, then ``ppo_epochs`` passes over its
mini-batches, each an optimiser step accumulated over micro-batches.

Old log-probs are recomputed by the trainer's model before the first epoch (``algo.old_logprobs:
recompute``, the default) rather than taken from the sampler, because the sampler's numbers are not the
trainer's: HFEngine reports the log-prob under the top-k/top-p-filtered distribution when filtering is on,
SGLang computes in bf16 with its own kernels and (for the entropy) a top-k estimate, and any of these makes
the first-epoch ratio differ from 1, so clipping would act on numerical noise instead of on policy change.
``sampler`` skips that forward pass for users whose engine matches the trainer. An on-policy update (one epoch
over one mini-batch: a single optimiser step, taken after every micro-batch's forward) needs no pass either:
the old policy is the current one, so each micro-batch's old log-probs are its current ones, detached (ratio 1,
as TRL and verl do it), and ``recompute`` skips the forward.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from arpo_kernels import TokenTerms

from ..algos.losses import LossInputs, get_loss
from ..config import AlgoConfig
from .microbatch import MicroBatch

MEAN_METRICS = ("clip_frac_high", "clip_frac_low", "dual_clip_frac", "approx_kl", "ratio_mean", "entropy_mean",
                "kl_mean")


def micro_batch_loss(mb: MicroBatch, logprobs: torch.Tensor, entropy: torch.Tensor, algo: AlgoConfig,
                     backend: str = "auto") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This micro-batch's term of the mini-batch loss (the terms add up to it) and its metrics, by the loss
    variant ``algo.loss`` (arpo.algos.losses)."""
    old = logprobs.detach() if mb.old_is_current else _like(mb.old_logprobs, logprobs)
    if old is None:
        raise RuntimeError("micro-batch has no old_logprobs: call attach_old_logprobs first")
    x = LossInputs(logprobs, entropy if algo.entropy_coef else entropy.detach(), old,
                   _like(mb.ref_logprobs, logprobs), TokenTerms(*(_like(v, logprobs) for v in mb.terms)),
                   None if mb.seq_index is None else mb.seq_index.to(logprobs.device), backend)
    return get_loss(algo.loss)(x, algo)


def _like(t: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(device=ref.device, dtype=ref.dtype)


def on_policy(batches: Sequence[Sequence[MicroBatch]], epochs: int) -> bool:
    """Whether the update is one optimiser step (one epoch, one mini-batch): every forward then sees the old
    policy's weights, so old log-probs = current log-probs."""
    return epochs == 1 and len(batches) == 1


@torch.no_grad()
def attach_old_logprobs(forward: Callable, batches: Sequence[Sequence[MicroBatch]], algo: AlgoConfig,
                        ref_forward: Callable | None = None, epochs: int | None = None) -> int:
    """Set ``old_logprobs`` (and ``ref_logprobs`` when ``ref_forward`` is given) of every micro-batch.
    ``epochs``: the update's epoch count; with ``recompute`` an on-policy update (``on_policy``) marks each
    micro-batch ``old_is_current`` instead of forwarding it (None: always forward). Returns the tokens
    forwarded."""
    forwarded = 0
    current = algo.old_logprobs == "recompute" and epochs is not None and on_policy(batches, epochs)
    for mb in (mb for mini in batches for mb in mini):
        if current:
            mb.old_is_current = True
        elif algo.old_logprobs == "sampler":
            _check_sampler_logprobs(mb)
            mb.old_logprobs = mb.sampler_logprobs.float()
        else:
            mb.old_logprobs = forward(mb)[0].float()
            forwarded += mb.tokens
        if ref_forward is not None:
            mb.ref_logprobs = ref_forward(mb)[0].float()
            forwarded += mb.tokens
    return forwarded


def _check_sampler_logprobs(mb: MicroBatch) -> None:
    missing = int(torch.isnan(mb.sampler_logprobs).sum())
    if missing:
        raise ValueError(f"algo.old_logprobs = sampler, but {missing} trainable tokens have no sampler log-prob "
                         "(the engine did not record them); use algo.old_logprobs = recompute")


class MetricSums:
    """Accumulates per-micro-batch metrics into per-update means (weighted by each micro-batch's share)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.ratio_min, self.ratio_max = math.inf, -math.inf
        self.loss = 0.0
        self.grad_norms: list[float] = []
        self.skipped = 0

    def add(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], share: float) -> None:
        self.loss += float(loss)
        for k in MEAN_METRICS:
            if k in metrics and share > 0 and math.isfinite(float(metrics[k])):
                self.sums[k] = self.sums.get(k, 0.0) + share * float(metrics[k])
                self.weights[k] = self.weights.get(k, 0.0) + share
        lo, hi = float(metrics["ratio_min"]), float(metrics["ratio_max"])
        if math.isfinite(lo):
            self.ratio_min, self.ratio_max = min(self.ratio_min, lo), max(self.ratio_max, hi)

    def result(self, optimizer_steps: int) -> dict[str, float]:
        out = {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}
        out.update(loss=self.loss / max(optimizer_steps, 1), ratio_min=self.ratio_min, ratio_max=self.ratio_max,
                   grad_norm=float(np.mean(self.grad_norms)) if self.grad_norms else math.nan,
                   grad_norm_max=max(self.grad_norms, default=math.nan), skipped_steps=float(self.skipped))
        return out


def micro_shares(mini: Sequence[MicroBatch]) -> list[float]:
    """Each micro-batch's share of its mini-batch (its part of the loss weight): the weights of its metrics."""
    weights = [float(mb.terms.weight.sum()) for mb in mini]
    total = sum(weights)
    return [w / total if total > 0 else 0.0 for w in weights]


def ppo_update(opt, batches: Sequence[Sequence[MicroBatch]], algo: AlgoConfig, epochs: int,
               rng: np.random.Generator, on_micro: Callable[[], None] | None = None) -> tuple[dict, int]:
    """``epochs`` passes over the mini-batches ``batches`` (order shuffled by ``rng`` each epoch); one
    optimiser step per mini-batch. ``opt``: a ``train.optim`` backend. Returns (metrics, tokens forwarded)."""
    sums, forwarded, steps = MetricSums(), 0, 0
    shares_of = [micro_shares(mini) for mini in batches]  # computed once, not per micro-batch and epoch
    for _ in range(epochs):
        for i in rng.permutation(len(batches)):
            mini, shares = batches[i], shares_of[i]
            for j, mb in enumerate(mini):
                lp, ent = opt.forward(mb)
                loss, metrics = micro_batch_loss(mb, lp, ent, algo, opt.kernel_backend)
                opt.backward(loss, last=j == len(mini) - 1)
                sums.add(loss.detach(), metrics, shares[j])
                forwarded += mb.tokens
                if on_micro is not None:
                    on_micro()
            norm = opt.step()
            steps += 1
            if math.isfinite(norm):
                sums.grad_norms.append(norm)
            else:  # the backend skipped this step (non-finite gradients)
                sums.skipped += 1
    return sums.result(steps), forwarded
