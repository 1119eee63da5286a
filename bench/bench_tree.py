"""Trajectory-tree bookkeeping, Python fallback vs C++ core, side by side in one run.

Workload (issue 2): 128 prompts x 16 leaves (8 initial paths + 8 branches), 4 tool turns, ~128 tokens a model
segment and ~64 a tool result. Timed: build every tree from the recorded operations, GRPO leaf advantages (the
same Python estimator for both), flatten_trees and pack_trees (soft credit). Run: make bench (or pytest
bench/bench_tree.py --benchmark-only).
"""
import platform

import numpy as np
import pytest

import arpo.tree as tree_api
from arpo import _tree as cpp
from arpo.algos.advantages import get_estimator
from arpo.tree import py_batch, py_tree
from arpo.tree.synthetic import build_tree, rollout_script

PROMPTS, LEAVES, INITIAL, TURNS, SEG = 128, 16, 8, 4, 128
IMPLS = {"python": (py_tree.TrajectoryTree, py_batch), "cpp": (cpp.TrajectoryTree, cpp)}


@pytest.fixture(scope="module")
def scripts():
    rng = np.random.default_rng(0)
    return [rollout_script(rng, LEAVES, INITIAL, TURNS, SEG) for _ in range(PROMPTS)]


def pipeline(cls, builders, scripts):
    trees = [build_tree(cls, s) for s in scripts]
    adv = get_estimator("grpo")([t.leaf_rewards() for t in trees], eps=1e-6)
    flat = builders.flatten_trees(trees, adv, "soft", 0)
    packed = builders.pack_trees(trees, adv, "soft", "token-mean")
    return trees, flat, packed


@pytest.mark.parametrize("impl", ["python", "cpp"])
def test_tree_pipeline(benchmark, scripts, impl):
    cls, builders = IMPLS[impl]
    benchmark.group = f"tree build+advantages+flatten+pack ({PROMPTS} prompts x {LEAVES} leaves)"
    trees, flat, packed = benchmark.pedantic(pipeline, args=(cls, builders, scripts), rounds=5, warmup_rounds=1)
    unique = sum(t.num_tokens(True) for t in trees)
    flat_tokens = sum(t.num_tokens(False) for t in trees)
    assert packed["input_ids"].size == unique and flat["input_ids"].shape[0] == PROMPTS * LEAVES
    benchmark.extra_info.update({
        "implementation": impl,
        "unique_tokens": unique,
        "flat_tokens": flat_tokens,
        "sharing_ratio": round(flat_tokens / unique, 3),
        "flat_shape": list(flat["input_ids"].shape),
        "flat_tokens_per_s": round(flat_tokens / benchmark.stats.stats.mean),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "active_implementation": tree_api.IMPLEMENTATION,
    })
