"""Typed views of the arrays flatten_trees / pack_trees return, plus the flat aggregation weights.

FlatBatch: one row per leaf (trajectory), right-padded to the longest path. PackedBatch: each unique token of
every tree once, trees concatenated; a token's log-prob is read from the hidden state at `prev_index` and it
attends to its ancestors only: key k is visible from query q iff k <= q < span_end[k].
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

DENSE_MASK_MAX_TOKENS = 16384  # a [T, T] bool mask above this is over 256 MB: use span_end (block masks)


@dataclass(frozen=True)
class FlatBatch:
    input_ids: np.ndarray  # [R, L] int64, pad_id after each path
    attention_mask: np.ndarray  # [R, L] int64, 1 on real tokens
    position_ids: np.ndarray  # [R, L] int64, 0..len-1 (0 on padding)
    loss_mask: np.ndarray  # [R, L] bool, True on model-generated (trainable) tokens
    advantages: np.ndarray  # [R, L] float32, the token's advantage (0 off the loss mask)
    old_logprobs: np.ndarray  # [R, L] float32, sampler log-probs (NaN where a trainable node had none)
    leaf_index: np.ndarray  # [R, 2] int64, (tree index, leaf node id) of each row

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]


@dataclass(frozen=True)
class PackedBatch:
    input_ids: np.ndarray  # [T] int64, each unique token once, trees in order, nodes depth-first
    position_ids: np.ndarray  # [T] int64, depth of the token on its path (= its flat position id)
    prev_index: np.ndarray  # [T] int64, packed index of the token it is predicted from (-1: first prompt token)
    span_end: np.ndarray  # [T] int64, one past the packed end of the subtree of the token's node
    loss_mask: np.ndarray  # [T] bool, trainable tokens
    loss_weight: np.ndarray  # [T] float32, Σ of the flat agg weights of the token's copies
    weight_pos: np.ndarray  # [T] float32, Σ w over copies with A > 0 (for clip-fraction metrics)
    weight_neg: np.ndarray  # [T] float32, Σ w over copies with A < 0
    adv_pos: np.ndarray  # [T] float32, Σ w·A over copies with A > 0
    adv_neg: np.ndarray  # [T] float32, Σ w·A over copies with A < 0
    old_logprobs: np.ndarray  # [T] float32, as in FlatBatch
    tree_offsets: np.ndarray  # [num_trees + 1] int64, tree i occupies [tree_offsets[i], tree_offsets[i+1])

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[0]

    def dense_mask(self) -> np.ndarray:
        """[T, T] bool, True where query q may attend key k (k is q or an ancestor of q)."""
        t = self.num_tokens
        if t > DENSE_MASK_MAX_TOKENS:
            raise ValueError(
                f"dense_mask() of {t} tokens would need {t * t / 2**20:.0f} MiB; build a block mask from span_end "
                f"(limit {DENSE_MASK_MAX_TOKENS} tokens)"
            )
        q = np.arange(t)[:, None]
        k = np.arange(t)[None, :]
        return (k <= q) & (q < self.span_end[None, :])


def batch_from_dict(cls, arrays: dict[str, np.ndarray]):
    """Build a FlatBatch/PackedBatch from a builder's dict, checking that it has exactly the expected arrays."""
    names = {f.name for f in fields(cls)}
    if set(arrays) != names:
        raise RuntimeError(f"{cls.__name__}: builder returned {sorted(arrays)}, expected {sorted(names)}")
    return cls(**arrays)
