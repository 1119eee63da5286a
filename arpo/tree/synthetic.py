"""Synthetic ARPO-shaped rollouts: random token trees with the structure a real rollout produces, for
benchmarks and the demo (no model involved).

Per prompt: `initial` paths start from the prompt; each alternates a model segment and a tool result for
`tool_turns` turns, then a final model segment (the answer). The remaining `leaves - initial` paths branch from
random tool-result nodes (where ARPO branches) and continue to the end. Every prompt gets exactly `leaves`
leaves. A rollout is recorded as a list of operations so that building it can be timed apart from sampling it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Op:
    parent: int  # node id in the tree being built (ids follow creation order)
    ids: np.ndarray  # [n] int64
    trainable: bool
    logprobs: np.ndarray | None  # [n] float64 for model segments


@dataclass(frozen=True)
class RolloutScript:
    prompt: np.ndarray  # [P] int64
    ops: list[Op]
    rewards: list[float]  # one per leaf, in leaf (creation) order


def _segment(rng: np.random.Generator, mean_len: int, vocab: int) -> np.ndarray:
    n = max(1, int(rng.integers(mean_len // 2, mean_len * 3 // 2 + 1)))
    return rng.integers(0, vocab, size=n, dtype=np.int64)


def _grow(rng, ops, parent, turns, seg, vocab, branch_points):
    """Append one path below `parent` with `turns` tool turns; record its tool-result nodes as branch points."""
    node = parent
    for turn in range(turns + 1):
        ids = _segment(rng, seg, vocab)
        ops.append(Op(node, ids, True, -rng.exponential(1.0, size=ids.size)))
        node = len(ops)
        if turn == turns:
            return
        ops.append(Op(node, _segment(rng, seg // 2, vocab), False, None))
        node = len(ops)
        branch_points.append((node, turns - turn - 1))


def rollout_script(rng: np.random.Generator, leaves: int = 16, initial: int = 8, tool_turns: int = 4,
                   segment_tokens: int = 128, prompt_tokens: int = 128, vocab: int = 32000) -> RolloutScript:
    if not 1 <= initial <= leaves:
        raise ValueError(f"need 1 <= initial <= leaves, got initial={initial}, leaves={leaves}")
    ops: list[Op] = []
    points: list[tuple[int, int]] = []
    for _ in range(initial):
        _grow(rng, ops, 0, tool_turns, segment_tokens, vocab, points)
    for _ in range(leaves - initial):
        at, turns_left = points[int(rng.integers(len(points)))] if points else (0, tool_turns)
        _grow(rng, ops, at, turns_left, segment_tokens, vocab, points)
    prompt = rng.integers(0, vocab, size=prompt_tokens, dtype=np.int64)
    return RolloutScript(prompt, ops, [float(r) for r in rng.integers(0, 2, size=leaves)])


def build_tree(tree_cls, script: RolloutScript):
    """Replay `script` into a new `tree_cls` (either implementation) and set the leaf rewards."""
    tree = tree_cls(script.prompt)
    for op in script.ops:
        tree.add(op.parent, op.ids, op.trainable, op.logprobs)
    for leaf, r in zip(tree.leaves(), script.rewards):
        tree.set_reward(leaf, r)
    return tree
