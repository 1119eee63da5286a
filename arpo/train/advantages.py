"""Group-normalised advantages for flat GRPO batches (one row per sample, a group per prompt), for users who
never build a TrajectoryTree. Same math as TrajectoryTree.advantages("soft"): per group,
Â_i = (r_i - mean) / (std + eps) with the Bessel-corrected std (0 for a group of one), or r_i - mean.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, *, scale_std: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """rewards [B] float, groups [B] int (e.g. the prompt index of each sample) -> advantages [B] float64."""
    if rewards.dim() != 1 or groups.shape != rewards.shape:
        raise ValueError(f"rewards and groups must both be [B], got {tuple(rewards.shape)} and {tuple(groups.shape)}")
    if groups.dtype not in (torch.int64, torch.int32) or (groups.numel() and int(groups.min()) < 0):
        raise ValueError("groups must be non-negative integer ids")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r, g = rewards.to(torch.float64), groups.long()
    n = int(g.max()) + 1 if g.numel() else 0
    count = torch.zeros(n, dtype=torch.float64, device=r.device).index_add_(0, g, torch.ones_like(r))
    mean = torch.zeros_like(count).index_add_(0, g, r) / count.clamp_min(1.0)
    centred = r - mean[g]
    if not scale_std:
        return centred
    sq = torch.zeros_like(count).index_add_(0, g, centred * centred)
    std = torch.where(count > 1, (sq / (count - 1).clamp_min(1.0)).sqrt(), torch.zeros_like(sq))
    return centred / (std[g] + eps)
