"""Plain-torch references of the kernels: the fallback backend, the baseline of the benchmarks and the oracle of
the tests. Differentiable by autograd; they materialise full [N, V] tensors (that is what the kernels avoid).
"""
from __future__ import annotations

import torch


def logprob_entropy_reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                              ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V], targets [N] -> (logprobs [N], entropy [N]), computed in fp32 (fp64 for fp64 input).

    logp_y = z_y - lse(z), H = -Σ p log p with z = logits / temperature; rows whose target is ignore_index
    give 0 and no gradient.
    """
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return _logprob_entropy(logits.to(acc), targets, temperature, ignore_index)


def torch_eager_logprob_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                                ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """The same chain computed in the logits' own dtype (what a user's torch code does; the baseline for
    low-precision error bounds and for the benchmarks)."""
    return _logprob_entropy(logits, targets, temperature, ignore_index)


def _logprob_entropy(z, targets, temperature, ignore_index):
    logp = torch.log_softmax(z / temperature, dim=-1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, torch.zeros_like(targets)).long()
    lp = logp.gather(-1, safe[:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(valid, lp, zero), torch.where(valid, ent, zero)


def linear_logprob_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                     temperature: float = 1.0, ignore_index: int = -100):
    """hidden [N, H], weight [V, H] -> the reference on logits = hidden @ weight.T (full [N, V] logits)."""
    return logprob_entropy_reference(hidden @ weight.T, targets, temperature, ignore_index)
