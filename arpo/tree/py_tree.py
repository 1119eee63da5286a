"""Pure-Python TrajectoryTree and batch builders: the documented API, and the fallback for the C++ core.

One tree holds one prompt's branched rollouts. Node 0 is the prompt (context). Every other node is a segment of
token ids that is either model-generated (``trainable=True``) or a tool result (context, ``trainable=False``).
A root-to-leaf path is one trajectory; the children of a node are branches sharing everything above them.

``csrc/traj_tree.cpp`` implements the same contract; the two are kept in step: the same checks with the same
messages and exception types, and every float computed in double in the same order, so that both produce
bit-identical arrays (tests/tree/test_cpp_python.py checks this).

Advantages (DESIGN.md, "Advantages"): the batch builders take the leaf advantages Â_1..Â_n of each tree (in
leaves() order) as input; an estimator of arpo.algos.advantages computes them from the leaf rewards
(``leaf_rewards()``). The tree assigns them to tokens by ``credit``:
  soft: every trainable token on leaf i's path carries Â_i in leaf i's row
  hard: a trainable token of node v carries mean(Â_j over the leaves j below v) in every row through v

Flat aggregation weight of a row (leaf) j with n_j loss tokens (rows without loss tokens weigh 0):
  token-mean            w_j = 1 / Σ_j n_j
  seq-mean-token-mean   w_j = 1 / (S · n_j)     S = number of rows with n_j > 0
  seq-mean-token-sum    w_j = 1 / S
A packed token stands for its copies in the rows through its node: loss_weight = Σ w_j,
adv_pos = Σ_{A_j>0} w_j A_j, adv_neg = Σ_{A_j<0} w_j A_j (DESIGN.md, "Tree packing is exact"), and
weight_pos = Σ_{A_j>0} w_j, weight_neg = Σ_{A_j<0} w_j (for metrics weighted like the loss).
"""
from __future__ import annotations

import math
from array import array
from typing import Any, Sequence

import numpy as np

INT32_MAX = 2**31 - 1
MAX_REWARD = 1e30  # larger rewards overflow an estimator's group variance
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
CREDITS = ("soft", "hard")


def _as_1d(obj: Any, name: str) -> np.ndarray:
    arr = np.asarray(obj)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got {arr.ndim} dimensions")
    return arr


def _as_ids(token_ids: Any) -> np.ndarray:
    """Token ids as int64 (validated against the int32 range later, as the C++ core does)."""
    arr = _as_1d(token_ids, "token ids")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _as_logprobs(logprobs: Any) -> np.ndarray | None:
    if logprobs is None:
        return None
    arr = _as_1d(logprobs, "logprobs")
    if arr.size and arr.dtype.kind not in "fiu":
        raise TypeError(f"logprobs must be real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_segment(ids: np.ndarray, lps: np.ndarray | None) -> None:
    bad = np.flatnonzero((ids < 0) | (ids > INT32_MAX))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"token id {ids[i]} at index {i} is outside the int32 range [0, {INT32_MAX}]")
    if lps is None:
        return
    if lps.size != ids.size:
        raise ValueError(f"logprobs has {lps.size} values for {ids.size} token ids")
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(lps.astype(np.float32)))  # stored as float32: finite there too
    if bad.size:
        raise ValueError(f"logprob at index {int(bad[0])} is not a finite float32")


def _as_index(value: Any, name: str) -> int:
    """A node id or count as a plain int (numpy ints accepted; bool, float and str refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _as_real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_credit(credit: str) -> str:
    if credit not in CREDITS:
        raise ValueError(f"unknown credit '{credit}': expected 'soft' or 'hard'")
    return credit


def _adv_vector(obj: Any, name: str) -> list[float]:
    """One advantage array as Python floats (doubles), converted like np.asarray(obj, float64)."""
    arr = _as_1d(obj, name)
    if arr.size and arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64).tolist()


def _check_leaf_advantages(t: "TrajectoryTree", adv: list[float], name: str) -> None:
    """One value per leaf of `t`, each finite as a float32 (the batches store float32)."""
    n = len(t.leaves())
    if len(adv) != n:
        raise ValueError(f"{name} has {len(adv)} values for the tree's {n} leaves")
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(np.asarray(adv, dtype=np.float64).astype(np.float32)))
    if bad.size:
        raise ValueError(f"{name}[{int(bad[0])}] is not a finite float32")


def _check_agg(agg: str) -> str:
    if agg not in AGG_MODES:
        raise ValueError(
            f"unknown agg '{agg}': expected 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum'"
        )
    return agg


class TrajectoryTree:
    """The branched rollouts of one prompt. Node ids are assigned in creation order; node 0 is the prompt."""

    def __init__(self, prompt_ids: Sequence[int] | np.ndarray):
        ids = _as_ids(prompt_ids)
        if ids.size == 0:
            raise ValueError("prompt_ids is empty: a trajectory needs at least one prompt token")
        _check_segment(ids, None)
        self._parent: list[int] = [-1]
        self._trainable: list[bool] = [False]
        self._offset: list[int] = [0]
        self._tokens: list[array] = [array("i", ids.astype(np.int32).tobytes())]
        self._logprobs: list[array | None] = [None]
        self._children: list[list[int]] = [[]]
        self._reward: list[float | None] = [None]

    # ---- building -------------------------------------------------------------------------------------------
    def add(self, parent: int, token_ids: Any, trainable: bool, logprobs: Any = None) -> int:
        """Add a child segment under `parent`; returns its node id. `logprobs` [n]: the sampler's log-probs."""
        ids, lps = _as_ids(token_ids), _as_logprobs(logprobs)
        trainable = _as_bool(trainable, "trainable")
        parent = self._checked(parent, "branch from")
        node = len(self._parent)
        self._check_append(node, trainable, None, ids, lps)
        self._parent.append(parent)
        self._trainable.append(trainable)
        self._offset.append(self._offset[parent] + len(self._tokens[parent]))
        self._tokens.append(array("i"))
        self._logprobs.append(None)
        self._children.append([])
        self._reward.append(None)
        self._children[parent].append(node)
        self._store(node, ids, lps)
        return node

    def extend(self, node: int, token_ids: Any, logprobs: Any = None) -> None:
        """Append tokens to `node`, which must have no children yet (streaming generation)."""
        ids, lps = _as_ids(token_ids), _as_logprobs(logprobs)
        node = self._checked(node, "extend")
        if self._children[node]:
            raise ValueError(
                f"cannot extend node {node}: it already has children (only the last segment of a path grows)"
            )
        has = None if not len(self._tokens[node]) else self._logprobs[node] is not None
        self._check_append(node, self._trainable[node], has, ids, lps)
        self._store(node, ids, lps)

    def set_reward(self, leaf: int, reward: float) -> None:
        leaf = self._node(leaf)
        if leaf == 0 or self._children[leaf]:
            raise ValueError(f"node {leaf} is not a leaf (the root and nodes with children take no reward)")
        reward = _as_real(reward, "reward")
        if not math.isfinite(reward) or abs(reward) > MAX_REWARD:
            raise ValueError(f"reward for leaf {leaf} is not finite or exceeds 1e30 in magnitude")
        self._reward[leaf] = reward

    # ---- reading --------------------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self._parent)

    def reward(self, node: int) -> float | None:
        return self._reward[self._node(node)]

    def parent(self, node: int) -> int:
        return self._parent[self._node(node)]

    def children(self, node: int) -> list[int]:
        return list(self._children[self._node(node)])

    def is_trainable(self, node: int) -> bool:
        return self._trainable[self._node(node)]

    def offset(self, node: int) -> int:
        """Position (depth) of the node's first token on its path."""
        return self._offset[self._node(node)]

    def tokens(self, node: int) -> np.ndarray:
        return np.array(self._tokens[self._node(node)], dtype=np.int32)

    def logprobs(self, node: int) -> np.ndarray | None:
        lp = self._logprobs[self._node(node)]
        return None if lp is None else np.array(lp, dtype=np.float32)

    def leaves(self) -> list[int]:
        """Non-root nodes without children, in creation order."""
        return [i for i in range(1, self.num_nodes) if not self._children[i]]

    def path(self, leaf: int) -> list[int]:
        """Node ids from the root to `leaf`."""
        leaf = self._node(leaf)
        out = []
        while leaf != -1:
            out.append(leaf)
            leaf = self._parent[leaf]
        return out[::-1]

    def num_tokens(self, unique: bool = True) -> int:
        """Tokens stored once per node (unique) or counted once per root-to-leaf path (as in a flat batch)."""
        if unique:
            return sum(len(t) for t in self._tokens)
        return sum(self._path_length(leaf) for leaf in self.leaves())

    # ---- rewards and advantages ---------------------------------------------------------------------------
    def leaf_rewards(self) -> np.ndarray:
        """float64 [num_leaves]: the leaf rewards in leaves() order (the input of an advantage estimator)."""
        out = []
        for leaf in self.leaves():
            if self._reward[leaf] is None:
                raise ValueError(f"leaf {leaf} has no reward: call set_reward() on every leaf first")
            out.append(self._reward[leaf])
        return np.array(out, dtype=np.float64)

    def node_advantages(self, leaf_advantages: Any) -> np.ndarray:
        """Hard credit: float64 [num_nodes], per node the mean of ``leaf_advantages`` ([num_leaves], leaves()
        order) over the leaves below it (the root's is the mean over all leaves; 0 for a tree without leaves)."""
        return np.array(self._node_advantages(_adv_vector(leaf_advantages, "leaf_advantages")), dtype=np.float64)

    def _node_advantages(self, leaf_adv: list[float]) -> list[float]:
        _check_leaf_advantages(self, leaf_adv, "leaf_advantages")
        total, count = [0.0] * self.num_nodes, [0.0] * self.num_nodes
        for leaf, a in zip(self.leaves(), leaf_adv):
            total[leaf], count[leaf] = a, 1.0
        for i in range(self.num_nodes - 1, 0, -1):
            total[self._parent[i]] += total[i]
            count[self._parent[i]] += count[i]
        return [s / c if c > 0.0 else 0.0 for s, c in zip(total, count)]

    # ---- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain lists and numbers (JSON-serialisable); from_dict(to_dict()) rebuilds the same tree."""
        nodes = []
        for i in range(1, self.num_nodes):
            lp = self._logprobs[i]
            nodes.append({
                "parent": self._parent[i],
                "tokens": self._tokens[i].tolist(),
                "trainable": self._trainable[i],
                "logprobs": None if lp is None else lp.tolist(),
                "reward": self._reward[i],
            })
        return {"prompt": self._tokens[0].tolist(), "nodes": nodes}

    @staticmethod
    def from_dict(data: dict) -> "TrajectoryTree":
        _check_keys(data, {"prompt", "nodes"}, "tree dict")
        tree = TrajectoryTree(_item(data, "prompt", "tree dict"))
        rewards = []
        for i, node in enumerate(_item(data, "nodes", "tree dict")):
            where = f"tree dict node {i + 1}"
            _check_keys(node, {"parent", "tokens", "trainable", "logprobs", "reward"}, where)
            parent = _item(node, "parent", where)
            if isinstance(parent, (bool, np.bool_)) or not isinstance(parent, (int, np.integer)):
                raise ValueError(f"{where} key 'parent' must be an int")
            if parent < 0 or parent > i:
                raise ValueError(f"{where} has parent {parent}: a parent must come before its child")
            trainable = _item(node, "trainable", where)
            if not isinstance(trainable, (bool, np.bool_)):
                raise ValueError(f"{where} key 'trainable' must be a bool")
            tree.add(int(parent), _item(node, "tokens", where), bool(trainable), _item(node, "logprobs", where))
            rewards.append(_item(node, "reward", where))
        for i, reward in enumerate(rewards):
            if reward is not None:
                tree.set_reward(i + 1, reward)
        return tree

    def __reduce__(self):
        return (TrajectoryTree.from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        return f"TrajectoryTree(nodes={self.num_nodes}, leaves={len(self.leaves())}, tokens={self.num_tokens(True)})"

    # ---- internals ------------------------------------------------------------------------------------------
    def _node(self, node: int) -> int:
        node = _as_index(node, "node")
        if not 0 <= node < self.num_nodes:
            raise IndexError(f"node {node} does not exist (the tree has {self.num_nodes} nodes)")
        return node

    def _checked(self, node: int, what: str) -> int:
        node = self._node(node)
        if self._reward[node] is not None:
            raise ValueError(f"cannot {what} node {node}: it has a reward, so it is a finished leaf")
        return node

    @staticmethod
    def _check_append(node: int, trainable: bool, has: bool | None, ids, lps) -> None:
        if lps is not None and not trainable:
            raise ValueError(f"logprobs given for a context (non-trainable) node {node}")
        _check_segment(ids, lps)
        if ids.size and has is not None and has != (lps is not None):
            state = "without" if lps is not None else "with"
            raise ValueError(
                f"node {node} was started {state} logprobs: give logprobs for every segment of a node or for none"
            )

    def _store(self, node: int, ids: np.ndarray, lps: np.ndarray | None) -> None:
        if not ids.size:
            return
        self._tokens[node].frombytes(ids.astype(np.int32).tobytes())
        if lps is not None:
            if self._logprobs[node] is None:
                self._logprobs[node] = array("f")
            self._logprobs[node].frombytes(lps.astype(np.float32).tobytes())

    def _path_length(self, leaf: int) -> int:
        return self._offset[leaf] + len(self._tokens[leaf])


def _item(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where} is missing key '{key}'")
    return d[key]


def _check_keys(d: dict, valid: set, where: str) -> None:
    for key in d:
        if key not in valid:
            raise ValueError(f"{where} has unknown key '{key}'")
