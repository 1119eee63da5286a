"""Pure-Python batch builders over py_tree trees: the flat batch (one row per leaf) and the packed batch (each
unique token once), from the trees and their leaf advantages. The C++ twins are arpo._tree.flatten_trees /
pack_trees; the credit assignment and the weights are defined in py_tree's module docstring. Both return
dicts of numpy arrays; arpo.tree wraps them in dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .py_tree import TrajectoryTree, _adv_vector, _check_agg, _check_credit, _check_leaf_advantages


@dataclass
class _TreeStats:
    leaves: list[int]
    leaf_adv: list[float]  # soft: per leaf, leaves() order
    node_adv: list[float]  # hard: per node
    loss_above: list[int]  # per node: trainable tokens on the path root..node


def _tree_stats(t: TrajectoryTree, adv: list[float], credit: str) -> _TreeStats:
    leaf_adv = adv if credit == "soft" else []
    node_adv = t._node_advantages(adv) if credit == "hard" else []
    loss_above = [0] * t.num_nodes
    for i in range(1, t.num_nodes):
        own = len(t._tokens[i]) if t._trainable[i] else 0
        loss_above[i] = loss_above[t._parent[i]] + own
    return _TreeStats(t.leaves(), leaf_adv, node_adv, loss_above)


def _all_stats(trees: list[TrajectoryTree], adv: list[list[float]], credit: str) -> list[_TreeStats]:
    if len(adv) != len(trees):
        raise ValueError(f"leaf_advantages has {len(adv)} arrays for {len(trees)} trees")
    for ti, (t, a) in enumerate(zip(trees, adv)):
        _check_leaf_advantages(t, a, f"leaf_advantages[{ti}]")
    return [_tree_stats(t, a, credit) for t, a in zip(trees, adv)]


def _adv_list(leaf_advantages: Any) -> list[list[float]]:
    if not isinstance(leaf_advantages, (list, tuple, np.ndarray)):
        raise TypeError(
            f"leaf_advantages must be a list of arrays (one per tree), got a {type(leaf_advantages).__name__}"
        )
    return [_adv_vector(a, f"leaf_advantages[{i}]") for i, a in enumerate(leaf_advantages)]


def _tree_list(trees: Sequence) -> list[TrajectoryTree]:
    trees = list(trees)
    for i, t in enumerate(trees):
        if not isinstance(t, TrajectoryTree):
            raise TypeError(
                f"trees[{i}] is a {type(t).__name__}, not an arpo.tree.py_tree.TrajectoryTree "
                "(do not mix the C++ and Python implementations)"
            )
    return trees


def _node_arrays(t: TrajectoryTree, node: int) -> tuple[np.ndarray, np.ndarray | None]:
    ids = np.frombuffer(t._tokens[node], dtype=np.int32) if len(t._tokens[node]) else np.empty(0, np.int32)
    lp = t._logprobs[node]
    return ids, (None if lp is None else np.frombuffer(lp, dtype=np.float32))


# ---- flat batch ---------------------------------------------------------------------------------------------
def flatten_trees(trees: Sequence, leaf_advantages: Any, credit: str = "soft", pad_id: int = 0
                  ) -> dict[str, np.ndarray]:
    """One row per leaf: arrays [rows, width] (leaf_index [rows, 2] = (tree, leaf node))."""
    trees = _tree_list(trees)
    _check_credit(credit)
    adv = _adv_list(leaf_advantages)
    rows = sum(len(t.leaves()) for t in trees)
    width = max([1] + [t._path_length(leaf) for t in trees for leaf in t.leaves()])
    stats = _all_stats(trees, adv, credit)
    out = {
        "input_ids": np.full((rows, width), pad_id, dtype=np.int64),
        "attention_mask": np.zeros((rows, width), dtype=np.int64),
        "position_ids": np.zeros((rows, width), dtype=np.int64),
        "loss_mask": np.zeros((rows, width), dtype=bool),
        "advantages": np.zeros((rows, width), dtype=np.float32),
        "old_logprobs": np.zeros((rows, width), dtype=np.float32),
        "leaf_index": np.zeros((rows, 2), dtype=np.int64),
    }
    row = 0
    for ti, (t, s) in enumerate(zip(trees, stats)):
        for j, leaf in enumerate(s.leaves):
            soft = s.leaf_adv[j] if credit == "soft" else 0.0
            _flatten_row(t, t.path(leaf), soft, s, credit, row, out)
            out["leaf_index"][row] = (ti, leaf)
            row += 1
    return out


def _flatten_row(t: TrajectoryTree, path: list[int], soft_adv: float, s: _TreeStats, credit: str, row: int,
                 out: dict[str, np.ndarray]) -> None:
    k = 0
    for node in path:
        ids, lp = _node_arrays(t, node)
        sl = slice(k, k + ids.size)
        out["input_ids"][row, sl] = ids
        out["attention_mask"][row, sl] = 1
        out["position_ids"][row, sl] = np.arange(k, k + ids.size)
        if t._trainable[node]:
            out["loss_mask"][row, sl] = True
            out["advantages"][row, sl] = soft_adv if credit == "soft" else s.node_adv[node]
            out["old_logprobs"][row, sl] = np.nan if lp is None else lp
        k += ids.size


# ---- packed batch -------------------------------------------------------------------------------------------
def _agg_weight(agg: str, n_loss: int, total_tokens: int, num_seqs: int) -> float:
    if n_loss == 0:
        return 0.0
    if agg == "token-mean":
        return 1.0 / float(total_tokens)
    if agg == "seq-mean-token-mean":
        return 1.0 / (float(num_seqs) * float(n_loss))
    return 1.0 / float(num_seqs)


def _node_sums(t: TrajectoryTree, s: _TreeStats, credit: str, agg: str, total_tokens: int, num_seqs: int):
    """Per node, over the leaves below: summed row weight W, the weights of copies with A > 0 / A < 0, and the
    signed weighted advantages Σ w·A over those copies."""
    n = t.num_nodes
    w, wpos, wneg, pos, neg = ([0.0] * n for _ in range(5))
    for j, leaf in enumerate(s.leaves):
        w[leaf] = _agg_weight(agg, s.loss_above[leaf], total_tokens, num_seqs)
        if credit == "soft":
            c = w[leaf] * s.leaf_adv[j]
            if s.leaf_adv[j] > 0.0:
                pos[leaf], wpos[leaf] = c, w[leaf]
            if s.leaf_adv[j] < 0.0:
                neg[leaf], wneg[leaf] = c, w[leaf]
    for i in range(n - 1, 0, -1):
        p = t._parent[i]
        for arr in (w, wpos, wneg, pos, neg):
            arr[p] += arr[i]
    if credit == "hard":
        pos = [wi * a if a > 0.0 else 0.0 for wi, a in zip(w, s.node_adv)]
        neg = [wi * a if a < 0.0 else 0.0 for wi, a in zip(w, s.node_adv)]
        wpos = [wi if a > 0.0 else 0.0 for wi, a in zip(w, s.node_adv)]
        wneg = [wi if a < 0.0 else 0.0 for wi, a in zip(w, s.node_adv)]
    return w, wpos, wneg, pos, neg


def _preorder(t: TrajectoryTree) -> list[int]:
    """Depth-first pre-order (children in creation order): every subtree is a contiguous range."""
    order, stack = [], [0]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(t._children[node]))
    return order


def pack_trees(trees: Sequence, leaf_advantages: Any, credit: str = "soft", agg: str = "token-mean"
               ) -> dict[str, np.ndarray]:
    """Each unique token once, trees concatenated in order; arrays [T], tree_offsets [num_trees + 1]."""
    trees = _tree_list(trees)
    _check_credit(credit)
    _check_agg(agg)
    adv = _adv_list(leaf_advantages)
    total = sum(t.num_tokens(True) for t in trees)
    stats = _all_stats(trees, adv, credit)
    loss_counts = [s.loss_above[leaf] for s in stats for leaf in s.leaves]
    total_tokens, num_seqs = sum(loss_counts), sum(1 for c in loss_counts if c > 0)
    out = {
        "input_ids": np.zeros(total, dtype=np.int64),
        "position_ids": np.zeros(total, dtype=np.int64),
        "prev_index": np.zeros(total, dtype=np.int64),
        "span_end": np.zeros(total, dtype=np.int64),
        "loss_mask": np.zeros(total, dtype=bool),
        "loss_weight": np.zeros(total, dtype=np.float32),
        "weight_pos": np.zeros(total, dtype=np.float32),
        "weight_neg": np.zeros(total, dtype=np.float32),
        "adv_pos": np.zeros(total, dtype=np.float32),
        "adv_neg": np.zeros(total, dtype=np.float32),
        "old_logprobs": np.zeros(total, dtype=np.float32),
        "tree_offsets": np.zeros(len(trees) + 1, dtype=np.int64),
    }
    base = 0
    for ti, (t, s) in enumerate(zip(trees, stats)):
        sums = _node_sums(t, s, credit, agg, total_tokens, num_seqs)
        _pack_tree(t, sums, base, out)
        base += t.num_tokens(True)
        out["tree_offsets"][ti + 1] = base
    return out


def _pack_tree(t: TrajectoryTree, sums, base: int, out: dict[str, np.ndarray]) -> None:
    w, wpos, wneg, pos, neg = sums
    order = _preorder(t)
    start, last, subtree_end = [0] * t.num_nodes, [0] * t.num_nodes, [0] * t.num_nodes
    cursor = base
    for node in order:
        ids, lp = _node_arrays(t, node)
        n = ids.size
        start[node] = cursor
        before = -1 if node == 0 else last[t._parent[node]]
        last[node] = cursor + n - 1 if n else before
        sl = slice(cursor, cursor + n)
        out["input_ids"][sl] = ids
        out["position_ids"][sl] = np.arange(t._offset[node], t._offset[node] + n)
        out["prev_index"][sl] = np.arange(cursor - 1, cursor + n - 1)
        if n:
            out["prev_index"][cursor] = before
        if t._trainable[node]:
            out["loss_mask"][sl] = True
            out["loss_weight"][sl] = w[node]
            out["weight_pos"][sl] = wpos[node]
            out["weight_neg"][sl] = wneg[node]
            out["adv_pos"][sl] = pos[node]
            out["adv_neg"][sl] = neg[node]
            out["old_logprobs"][sl] = np.nan if lp is None else lp
        cursor += n
        subtree_end[node] = cursor
    for node in reversed(order[1:]):
        p = t._parent[node]
        subtree_end[p] = max(subtree_end[p], subtree_end[node])
    for node in order:
        out["span_end"][start[node]:start[node] + len(t._tokens[node])] = subtree_end[node]
