"""Micro-batches of one mini-batch of trees: the model inputs of one forward/backward and the loss terms of
its trainable tokens. One layout for both updates: rows of tokens where a token attends to its ancestors in the
row (``span_end``) and carries spec.TokenTerms (sums over its copies). The leaf advantages come with the trees
(one array per tree, leaves() order: an estimator's output, computed once per step over the whole batch);
``credit`` assigns them to tokens (soft or hard).

- packed: ``pack_trees`` over the mini-batch: each shared token once, with as many copies as leaves below it.
- flat: the packed layout with nothing shared: each root-to-leaf path (its prompt included) is a row of its
  own, every token one copy (``arpo_kernels.flat_terms``), so ``seq_index`` names each token's sequence.

The aggregation weights of ``algo.agg`` are those of the whole mini-batch, so the micro-batch losses add up to
the mini-batch loss exactly (gradient accumulation changes nothing). A micro-batch is a set of whole rows,
sorted by length (least padding) and cut at ``micro_batch_tokens``; a row longer than that is a micro-batch of
its own. Every trainable token's log-prob is read from the hidden state of the token it is predicted from (its
``prev_index``); ``src`` holds those positions as indices into the micro-batch's flattened hidden states
``[B*L, H]``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from arpo_kernels import TokenTerms, flat_terms, flat_weights

from ..tree import FlatBatch, PackedBatch, flatten_trees, pack_trees


@dataclasses.dataclass
class MicroBatch:
    """One forward/backward. ``n`` = trainable tokens; every loss tensor is [n] (float32 unless noted)."""

    input_ids: torch.Tensor  # [B, L] int64 (flat: a row per leaf; packed: a row per tree or part of one)
    position_ids: torch.Tensor  # [B, L] int64, the token's depth on its path
    span_end: torch.Tensor  # [B, L] int64, in row b key k is visible from q iff k <= q < span_end[b, k]
    src: torch.Tensor  # [n] int64, index into the flattened hidden states [B*L, H]
    targets: torch.Tensor  # [n] int64
    terms: TokenTerms  # [n] each: the mini-batch's aggregation weights and advantages, summed over copies
    sampler_logprobs: torch.Tensor  # [n] the sampler's log-probs (NaN where none was recorded)
    seq_index: torch.Tensor | None = None  # [n] int64 sequence (flat row) of each token; None when packed
    tokens: int = 0  # token slots forwarded (padding included)
    old_logprobs: torch.Tensor | None = None  # [n], set before the first epoch
    old_is_current: bool = False  # on-policy update: the old log-probs are the current ones, detached
    ref_logprobs: torch.Tensor | None = None  # [n], set when algo.kl_coef > 0

    @property
    def num_loss_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device) -> "MicroBatch":
        """A copy with every tensor on ``device``."""
        moved = {f.name: _move(getattr(self, f.name), device) for f in dataclasses.fields(self)}
        return MicroBatch(**moved)


def zero_weight_copy(mb: MicroBatch) -> MicroBatch:
    """The same forward with no weight in the loss (pads a rank's micro-batch count under ZeRO-2/3)."""
    return dataclasses.replace(mb, terms=TokenTerms(*map(torch.zeros_like, mb.terms)))


def _move(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, TokenTerms):
        return TokenTerms(*(v.to(device) for v in value))
    return value


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# ---- flat ---------------------------------------------------------------------------------------------------
def flat_micro_batches(trees: Sequence, leaf_advantages: Sequence, *, credit: str, agg: str, max_tokens: int,
                       pad_id: int) -> list[MicroBatch]:
    """The mini-batch ``trees`` with one row per root-to-leaf path, in micro-batches of at most ``max_tokens``
    padded token slots each."""
    pb = _unshared(flatten_trees(trees, leaf_advantages, credit, pad_id), agg)
    rows = [_tree_rows(pb, int(pb.tree_offsets[i]), int(pb.tree_offsets[i + 1]), None)[0]
            for i in range(len(pb.tree_offsets) - 1)]
    for i, r in enumerate(rows):
        r.seq = i
    groups = _length_groups(np.array([len(r.index) for r in rows], dtype=np.int64), max_tokens)
    return [_packed_micro(pb, [rows[i] for i in g]) for g in groups]


def _unshared(fb: FlatBatch, agg: str) -> PackedBatch:
    """The flat batch as a PackedBatch in which every path is a tree of its own (a chain: each token sees the
    tokens before it in its row), with the aggregation weights of ``agg`` over all rows."""
    real = fb.attention_mask.astype(bool)  # [R, L], each row's tokens then its padding
    lengths = real.sum(1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    prev = np.arange(offsets[-1], dtype=np.int64) - 1
    prev[offsets[:-1][lengths > 0]] = -1
    w = flat_weights(torch.from_numpy(fb.loss_mask), agg)  # [R, L] float64, 0 off the loss mask
    terms = flat_terms(torch.from_numpy(fb.advantages).double(), w)
    f32 = {name: v.float().numpy()[real] for name, v in zip(TokenTerms._fields, terms)}
    return PackedBatch(input_ids=fb.input_ids[real], position_ids=fb.position_ids[real], prev_index=prev,
                       span_end=np.repeat(offsets[1:], lengths), loss_mask=fb.loss_mask[real],
                       loss_weight=f32["weight"], weight_pos=f32["weight_pos"], weight_neg=f32["weight_neg"],
                       adv_pos=f32["adv_pos"], adv_neg=f32["adv_neg"], old_logprobs=fb.old_logprobs[real],
                       tree_offsets=offsets)


# ---- packed -------------------------------------------------------------------------------------------------
_PB_TERMS = ("adv_pos", "adv_neg", "loss_weight", "weight_pos", "weight_neg")  # PackedBatch names, TokenTerms order
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
    seq: int = -1  # flat: the row's sequence id (its path); -1 when packed


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
    seq = None if rows[0].seq < 0 else _t(np.concatenate([np.full(len(r.loss), r.seq, np.int64) for r in rows]))
    return MicroBatch(
        input_ids=_t(ids),
        position_ids=_t(pos),
        span_end=_t(span),
        src=_t(np.concatenate([i * width + r.prev[r.loss] for i, r in enumerate(rows)])),
        targets=_t(pb.input_ids[sel]),
        terms=TokenTerms(*(_t(getattr(pb, name)[sel]) for name in _PB_TERMS)),
        sampler_logprobs=_t(pb.old_logprobs[sel]),
        seq_index=seq,
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
