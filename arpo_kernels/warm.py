"""``warm_up``: pay the kernels' one-time costs (numba's import, its on-disk cache lookups and thread pool; Triton's
compilation on CUDA) before the first training step, so that step's timing measures the step.

Measured on the 2-core CPU machine: the first numba log-prob + entropy call of a process took 3.0 s, the next
0.006 s. The warm-up uses fixed inputs (no random numbers: the caller's RNG streams are untouched) and leaves no
gradient anywhere but on its own tensors.
"""
from __future__ import annotations

import time

import torch

from .linear_logprob_entropy import linear_logprob_entropy
from .policy_loss import policy_loss, policy_loss_packed


def warm_up(backend: str = "auto", dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
            kl_type: str = "low_var_kl", with_kl: bool = True) -> float:
    """Run the log-prob + entropy kernel and both policy-loss forms, forward and backward, once on tiny inputs of
    ``dtype`` on ``device`` with ``backend``; returns the seconds it took. The loss runs with an entropy term
    and, when ``with_kl``, a ``kl_type`` KL term (else none): each combination is its own compiled kernel, so
    pass what the training will use (a trainer: ``with_kl = algo.kl_coef > 0``)."""
    start = time.perf_counter()
    n, hidden, vocab = 8, 16, 64
    h = torch.linspace(-1, 1, n * hidden, dtype=dtype, device=device).reshape(n, hidden).requires_grad_()
    w = torch.linspace(1, -1, vocab * hidden, dtype=dtype, device=device).reshape(vocab, hidden).requires_grad_()
    targets = torch.arange(n, device=device) % vocab
    lp, ent = linear_logprob_entropy(h, w, targets, backend=backend)
    old = lp.detach() + 0.01
    adv = torch.linspace(-1, 1, n, dtype=lp.dtype, device=device)
    mask = torch.ones(n, dtype=torch.bool, device=device)
    kl = dict(ref_logprobs=old, kl_coef=0.1) if with_kl else {}
    kl["kl_type"] = kl_type  # part of the kernel's key even without a reference, as in the trainer's calls
    loss, _ = policy_loss(lp, old, adv, mask, entropy=ent, entropy_coef=0.01, backend=backend, **kl)
    weight = torch.full((n,), 1.0 / n, dtype=lp.dtype, device=device)
    packed, _ = policy_loss_packed(lp, old, adv.clamp(min=0), adv.clamp(max=0), weight, entropy=ent,
                                   entropy_coef=0.01, backend=backend, **kl)
    (loss + packed).backward()
    return time.perf_counter() - start
