"""Micro-batches of one mini-batch of trees: the model inputs of one forward/backward and the loss terms of
its trainable tokens, in the flat layout (one row per leaf) or the tree-packed one (each unique token once).
The leaf advantages come with the trees (one array per tree, leaves() order: an estimator's output, computed
once per step over the whole batch); ``credit`` assigns them to tokens (soft or hard).

The aggregation weights of ``algo.agg`` are those of the whole mini-batch, so the micro-batch losses add up to
the mini-batch loss exactly (gradient accumulation changes nothing):

- packed: ``pack_trees`` over the mini-batch gives each token its global weight; a micro-batch is a set of
  whole trees, one row each (indices rebased to the row). A single tree larger than ``micro_batch_tokens`` is
  a micro-batch of its own.
- flat: ``policy_loss`` normalises within the rows it sees, so each micro-batch carries ``scale`` = its share
  of the mini-batch normaliser (its loss tokens / all loss tokens for ``token-mean``; its non-empty rows / all
  non-empty rows for the ``seq-mean-*`` modes) and the trainer multiplies its loss by it. Rows are sorted by
  length before they are cut into micro-batches (least padding: the fair flat baseline).

Every trainable token's log-prob is read from the hidden state of the token it is predicted from: the one
before it in its row (flat), its ``prev_index`` (packed). ``src`` holds those positions as indices into the
micro-batch's flattened hidden states ``[B*L, H]``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ..tree import FlatBatch, PackedBatch, flatten_trees, pack_trees


@dataclasses.dataclass
class MicroBatch:
    """One forward/backward. ``n`` = trainable tokens; every loss tensor is [n] (float32 unless noted)."""

    input_ids: torch.Tensor  # [B, L] int64 (flat: a row per leaf; packed: a row per tree)
    position_ids: torch.Tensor  # [B, L] int64
    attention_mask: torch.Tensor | None  # flat: [B, L] int64; packed: None (built from span_end on the device)
    span_end: torch.Tensor | None  # packed: [B, L] int64, in row b key k is visible from q iff k <= q < span_end[b, k]
    src: torch.Tensor  # [n] int64, index into the flattened hidden states [B*L, H]
    targets: torch.Tensor  # [n] int64
    terms: dict[str, torch.Tensor]  # flat: advantages, seq_index (int64); packed: adv_pos, adv_neg, weight, ...
    sampler_logprobs: torch.Tensor  # [n] the sampler's log-probs (NaN where none was recorded)
    scale: float = 1.0  # flat: this micro-batch's share of the mini-batch normaliser
    tokens: int = 0  # token slots forwarded (padding included)
    old_logprobs: torch.Tensor | None = None  # [n], set before the first epoch
    ref_logprobs: torch.Tensor | None = None  # [n], set when algo.kl_coef > 0

    @property
    def packed(self) -> bool:
        return self.span_end is not None

    @property
    def num_loss_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device) -> "MicroBatch":
        """A copy with every tensor on ``device``."""
        moved = {f.name: _move(getattr(self, f.name), device) for f in dataclasses.fields(self)}
        return MicroBatch(**moved)


def zero_weight_copy(mb: MicroBatch) -> MicroBatch:
    """The same forward with no weight in the loss (pads a rank's micro-batch count under ZeRO-2/3)."""
    if not mb.packed:
        return dataclasses.replace(mb, scale=0.0)
    return dataclasses.replace(mb, terms={k: torch.zeros_like(v) for k, v in mb.terms.items()})


def _move(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: v.to(device) for k, v in value.items()}
    return value


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# ---- flat ---------------------------------------------------------------------------------------------------
def flat_micro_batches(trees: Sequence, leaf_advantages: Sequence, *, credit: str, agg: str, max_tokens: int,
                       pad_id: int) -> list[MicroBatch]:
    """The mini-batch ``trees`` as flat micro-batches of at most ``max_tokens`` padded token slots each."""
    fb = flatten_trees(trees, leaf_advantages, credit, pad_id)
    lengths = fb.attention_mask.sum(1)
    loss_tokens = fb.loss_mask.sum(1)
    norm = float(loss_tokens.sum()) if agg == "token-mean" else float((loss_tokens > 0).sum())
    groups = _length_groups(lengths, max_tokens)
    return [_flat_micro(fb, np.array(g), int(lengths[g[0]]), agg, norm) for g in groups]


def _flat_micro(fb: FlatBatch, rows: np.ndarray, width: int, agg: str, norm: float) -> MicroBatch:
    ids = fb.input_ids[rows, :width]
    mask = fb.loss_mask[rows, :width]
    r_idx, c_idx = np.nonzero(mask)  # c_idx >= 1: the prompt (position 0) is never trainable
    own = float(mask.sum()) if agg == "token-mean" else float(mask.any(1).sum())
    return MicroBatch(
        input_ids=_t(ids),
        position_ids=_t(fb.position_ids[rows, :width]),
        attention_mask=_t(fb.attention_mask[rows, :width]),
        span_end=None,
        src=_t(r_idx * width + c_idx - 1),
        targets=_t(ids[r_idx, c_idx]),
        terms={"advantages": _t(fb.advantages[rows, :width][r_idx, c_idx]), "seq_index": _t(r_idx.astype(np.int64))},
        sampler_logprobs=_t(fb.old_logprobs[rows, :width][r_idx, c_idx]),
        scale=own / norm if norm > 0 else 0.0,
        tokens=int(ids.size),
    )


# ---- packed -------------------------------------------------------------------------------------------------
PACKED_TERMS = ("adv_pos", "adv_neg", "loss_weight", "weight_pos", "weight_neg")


ROW_PATHS = 2  # bounded packed rows hold about this many longest paths' worth of tokens


def packed_micro_batches(trees: Sequence, leaf_advantages: Sequence, *, credit: str, agg: str, max_tokens: int,
                         whole_trees: bool = False) -> list[MicroBatch]:
    """The mini-batch ``trees`` tree-packed, as rows grouped into micro-batches of at most ``max_tokens``
    padded token slots (rows sorted by length).

    ``whole_trees``: one row per tree (for block-sparse flex attention, which skips the masked blocks).
    Otherwise a tree is split into rows of at most ``ROW_PATHS`` x the longest path's tokens, each the union of
    the root paths of consecutive leaves: a dense attention mask costs T² per row, so bounded rows trade a few
    repeated shared tokens (context only: each trainable token's loss terms sit in exactly one row) for much
    less attention work. Either way the loss and its gradient equal the flat batch's.
    """
    pb = pack_trees(trees, leaf_advantages, credit, agg)
    row_tokens = None if whole_trees or pb.num_tokens == 0 else ROW_PATHS * (int(pb.position_ids.max()) + 1)
    rows = []
    for t in range(len(pb.tree_offsets) - 1):
        a, b = int(pb.tree_offsets[t]), int(pb.tree_offsets[t + 1])
        rows += _tree_rows(pb, a, b, row_tokens)
    groups = _length_groups(np.array([len(r.index) for r in rows]), max_tokens)
    return [_packed_micro(pb, [rows[i] for i in g]) for g in groups]


@dataclasses.dataclass
class _Row:
    index: np.ndarray  # [n] indices into the PackedBatch, increasing (ancestors before descendants)
    prev: np.ndarray  # [n] row-local index of the token each is predicted from (-1: none)
    span_end: np.ndarray  # [n] row-local span_end
    loss: np.ndarray  # row-local positions whose loss terms this row carries


def _tree_rows(pb: PackedBatch, a: int, b: int, row_tokens: int | None) -> list[_Row]:
    """Rows of tree [a, b): the whole tree, or unions of leaf paths of at most ``row_tokens`` tokens (a single
    longer path is a row of its own)."""
    n = b - a
    prev = pb.prev_index[a:b] - a  # token-level parent pointers (-1: the first prompt token)
    if row_tokens is None or n <= row_tokens:
        groups = [np.arange(n)]
    else:
        groups = _leaf_path_unions(prev, row_tokens)
    owned = np.zeros(n, dtype=bool)
    rows = []
    for idx in groups:
        span = np.searchsorted(idx, pb.span_end[a:b][idx] - a)
        loc_prev = np.where(prev[idx] >= 0, np.searchsorted(idx, prev[idx]), -1)
        loss = np.flatnonzero(pb.loss_mask[a:b][idx] & (loc_prev >= 0) & ~owned[idx])
        owned[idx[loss]] = True
        rows.append(_Row(idx + a, loc_prev, span, loss))
    return rows


def _leaf_path_unions(prev: np.ndarray, row_tokens: int) -> list[np.ndarray]:
    """Leaves (tokens nothing is predicted from) in depth-first order, greedily grouped while the union of
    their root paths stays within ``row_tokens``; returns each group's sorted token indices."""
    is_leaf = np.ones(prev.size, dtype=bool)
    is_leaf[prev[prev >= 0]] = False
    groups, member = [], np.zeros(prev.size, dtype=bool)
    size = 0
    for leaf in np.flatnonzero(is_leaf):
        chain = _new_ancestors(prev, int(leaf), member)
        if size and size + len(chain) > row_tokens:
            groups.append(np.flatnonzero(member))
            member[:] = False
            chain = _new_ancestors(prev, int(leaf), member)
            size = 0
        member[chain] = True
        size += len(chain)
    groups.append(np.flatnonzero(member))
    return groups


def _new_ancestors(prev: np.ndarray, t: int, member: np.ndarray) -> list[int]:
    chain = []
    while t >= 0 and not member[t]:
        chain.append(t)
        t = int(prev[t])
    return chain


def _length_groups(lengths: np.ndarray, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length (longest first), cut into groups whose padded size (rows x longest) fits
    ``max_tokens``; an item longer than that is a group of its own."""
    groups: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable"):
        if groups and (len(groups[-1]) + 1) * int(lengths[groups[-1][0]]) <= max_tokens:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return groups


def _packed_micro(pb: PackedBatch, rows: list[_Row]) -> MicroBatch:
    """``rows`` right-padded to the longest; a pad slot attends to itself only."""
    width = max(len(r.index) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    pos = np.zeros((len(rows), width), np.int64)
    span = np.tile(np.arange(1, width + 1, dtype=np.int64), (len(rows), 1))
    for i, r in enumerate(rows):
        n = len(r.index)
        ids[i, :n], pos[i, :n], span[i, :n] = pb.input_ids[r.index], pb.position_ids[r.index], r.span_end
    sel = np.concatenate([r.index[r.loss] for r in rows])  # PackedBatch indices of the loss tokens
    return MicroBatch(
        input_ids=_t(ids),
        position_ids=_t(pos),
        attention_mask=None,
        span_end=_t(span),
        src=_t(np.concatenate([i * width + r.prev[r.loss] for i, r in enumerate(rows)])),
        targets=_t(pb.input_ids[sel]),
        terms={name: _t(getattr(pb, name)[sel]) for name in PACKED_TERMS},
        sampler_logprobs=_t(pb.old_logprobs[sel]),
        tokens=int(ids.size),
    )


def micro_batches(trees: Sequence, leaf_advantages: Sequence, *, update: str, credit: str, agg: str,
                  max_tokens: int, pad_id: int, whole_trees: bool = False) -> list[MicroBatch]:
    """``update`` = "flat" or "packed" micro-batches of one mini-batch of trees and their leaf advantages
    (``whole_trees``: packed only)."""
    if update == "packed":
        return packed_micro_batches(trees, leaf_advantages, credit=credit, agg=agg, max_tokens=max_tokens,
                                    whole_trees=whole_trees)
    if update == "flat":
        return flat_micro_batches(trees, leaf_advantages, credit=credit, agg=agg, max_tokens=max_tokens,
                                  pad_id=pad_id)
    raise ValueError(f"unknown update mode {update!r}: expected 'flat' or 'packed'")
