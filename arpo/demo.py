"""`arpo demo` before the trainer exists: synthetic ARPO-shaped rollouts through the trajectory tree.

Builds one tree per prompt with the config's budget (rollout.M leaves, rollout.N initial paths, up to
rollout.max_tool_calls tool turns), scores the leaves, computes algo.advantage advantages, builds the flat and
the tree-packed batch for algo.agg, checks that packing is exact (the packed sums equal the flat sums for a
per-token test function), and times the C++ core against the pure-Python fallback. Later issues replace this
with the real training run.
"""
from __future__ import annotations

import time

import numpy as np

from . import tree as tree_api
from .config import ARPOConfig
from .tree import flat_weights, py_batch, py_tree
from .tree.synthetic import build_tree, rollout_script


def _scripts(cfg: ARPOConfig, prompts: int, seed: int):
    rng = np.random.default_rng(seed)
    r = cfg.rollout
    return [rollout_script(rng, r.M, r.N, r.max_tool_calls, segment_tokens=64, prompt_tokens=96)
            for _ in range(prompts)]


def _pipeline(cls, builders, scripts, cfg: ARPOConfig):
    a = cfg.algo
    trees = [build_tree(cls, s) for s in scripts]
    flat = builders.flatten_trees(trees, a.advantage, 0, a.scale_std, a.eps)
    packed = builders.pack_trees(trees, a.advantage, a.agg, a.scale_std, a.eps)
    return trees, flat, packed


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _packing_error(flat, packed, agg: str) -> tuple[float, float]:
    """Σ_flat w·A·g and Σ_packed (adv_pos + adv_neg)·g for g(token, depth), a function each copy shares."""
    def g(ids, pos):
        return np.cos(0.1 * ids + 0.37 * pos)

    w = flat_weights(flat["loss_mask"], agg)
    flat_sum = float((w * flat["advantages"] * g(flat["input_ids"], flat["position_ids"])).sum())
    adv = packed["adv_pos"].astype(np.float64) + packed["adv_neg"]
    return flat_sum, float((adv * g(packed["input_ids"], packed["position_ids"])).sum())


def run_demo(cfg: ARPOConfig, prompts: int = 32, seed: int = 0) -> dict:
    """Run the demo, print what it did, and return the numbers it printed."""
    scripts = _scripts(cfg, prompts, seed)
    native = (tree_api.TrajectoryTree, tree_api._backend([]))
    t_native, (trees, flat, packed) = _timed(lambda: _pipeline(*native, scripts, cfg))
    t_python, _ = _timed(lambda: _pipeline(py_tree.TrajectoryTree, py_batch, scripts, cfg))
    unique = sum(t.num_tokens(True) for t in trees)
    flat_tokens = sum(t.num_tokens(False) for t in trees)
    flat_sum, packed_sum = _packing_error(flat, packed, cfg.algo.agg)
    report = {
        "implementation": tree_api.IMPLEMENTATION, "prompts": prompts, "trajectories": flat["input_ids"].shape[0],
        "flat_shape": flat["input_ids"].shape, "flat_tokens": flat_tokens, "unique_tokens": unique,
        "loss_tokens_flat": int(flat["loss_mask"].sum()), "loss_tokens_packed": int(packed["loss_mask"].sum()),
        "flat_sum": flat_sum, "packed_sum": packed_sum, "seconds_native": t_native, "seconds_python": t_python,
    }
    _print_report(cfg, report)
    return report


def _print_report(cfg: ARPOConfig, r: dict) -> None:
    ro, a = cfg.rollout, cfg.algo
    print("ARPO engine demo — the trainer is not built yet; this runs the trajectory-tree path end to end.")
    print(f"  rollouts   {r['prompts']} prompts x M={ro.M} leaves (N={ro.N} initial paths, branches at tool "
          f"results, up to {ro.max_tool_calls} tool turns), synthetic tokens, random 0/1 rewards")
    print(f"  tree core  {r['implementation']}")
    print(f"  flat       {r['trajectories']} rows x {r['flat_shape'][1]} columns, {r['flat_tokens']:,} tokens, "
          f"{r['loss_tokens_flat']:,} in the loss")
    print(f"  packed     {r['unique_tokens']:,} unique tokens ({r['flat_tokens'] / r['unique_tokens']:.2f}x sharing), "
          f"{r['loss_tokens_packed']:,} in the loss")
    diff = abs(r["flat_sum"] - r["packed_sum"])
    print(f"  exactness  advantage={a.advantage}, agg={a.agg}: sum w*A*g flat {r['flat_sum']:+.8f}, "
          f"packed {r['packed_sum']:+.8f} (|diff| {diff:.1e})")
    print(f"  time       build+advantages+flatten+pack: {r['implementation']} {r['seconds_native'] * 1e3:.1f} ms, "
          f"pure Python {r['seconds_python'] * 1e3:.1f} ms ({r['seconds_python'] / r['seconds_native']:.1f}x)")
