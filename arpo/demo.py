"""`arpo demo` before the trainer exists: synthetic ARPO-shaped rollouts through the trajectory tree.

Builds one tree per prompt with the config's budget (rollout.M leaves, rollout.N initial paths, up to
rollout.max_tool_calls tool turns), scores the leaves, computes algo.advantage advantages, builds the flat and
the tree-packed batch for algo.agg, times the C++ core against the pure-Python fallback, then evaluates the fused
policy loss (algo.* clip/KL settings) on both batches with synthetic new/old log-probs and shows that packing is
exact: the same loss and metrics from each unique token once. Later issues replace this with the training run.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from arpo_kernels import policy_loss, policy_loss_packed

from . import tree as tree_api
from .config import ARPOConfig
from .tree import py_batch, py_tree
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


def _synthetic_logprobs(ids: np.ndarray, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(new, old) log-probs as functions of (token, depth), so every copy of a shared token agrees."""
    phase = 0.1 * ids + 0.37 * pos
    new = -1.5 + 0.5 * np.cos(phase)
    return torch.from_numpy(new).float(), torch.from_numpy(new + 0.3 * np.sin(3.0 * phase)).float()


def _policy_losses(flat, packed, cfg: ARPOConfig) -> dict:
    """The fused policy loss on the flat rows and on the packed tokens (numba on CPU), with timings."""
    a = cfg.algo
    clip = dict(clip_low=a.clip_low, clip_high=a.clip_high, dual_clip=a.dual_clip)
    lp_f, old_f = _synthetic_logprobs(flat["input_ids"], flat["position_ids"])
    lp_p, old_p = _synthetic_logprobs(packed["input_ids"], packed["position_ids"])
    p = {k: torch.from_numpy(packed[k]) for k in ("adv_pos", "adv_neg", "loss_weight", "weight_pos", "weight_neg")}
    t_flat, (loss_f, m_f) = _timed(lambda: policy_loss(
        lp_f, old_f, torch.from_numpy(flat["advantages"]), torch.from_numpy(flat["loss_mask"]), agg=a.agg, **clip))
    t_packed, (loss_p, m_p) = _timed(lambda: policy_loss_packed(
        lp_p, old_p, p["adv_pos"], p["adv_neg"], p["loss_weight"], weight_pos=p["weight_pos"],
        weight_neg=p["weight_neg"], **clip))
    return {"loss_flat": loss_f.item(), "loss_packed": loss_p.item(), "seconds_loss_flat": t_flat,
            "seconds_loss_packed": t_packed, "clip_frac_flat": (m_f["clip_frac_high"] + m_f["clip_frac_low"]).item(),
            "clip_frac_packed": (m_p["clip_frac_high"] + m_p["clip_frac_low"]).item()}


def run_demo(cfg: ARPOConfig, prompts: int = 32, seed: int = 0) -> dict:
    """Run the demo, print what it did, and return the numbers it printed."""
    scripts = _scripts(cfg, prompts, seed)
    native = (tree_api.TrajectoryTree, tree_api._backend([]))
    t_native, (trees, flat, packed) = _timed(lambda: _pipeline(*native, scripts, cfg))
    t_python, _ = _timed(lambda: _pipeline(py_tree.TrajectoryTree, py_batch, scripts, cfg))
    unique = sum(t.num_tokens(True) for t in trees)
    flat_tokens = sum(t.num_tokens(False) for t in trees)
    report = {
        "implementation": tree_api.IMPLEMENTATION, "prompts": prompts, "trajectories": flat["input_ids"].shape[0],
        "flat_shape": flat["input_ids"].shape, "flat_tokens": flat_tokens, "unique_tokens": unique,
        "loss_tokens_flat": int(flat["loss_mask"].sum()), "loss_tokens_packed": int(packed["loss_mask"].sum()),
        "seconds_native": t_native, "seconds_python": t_python, **_policy_losses(flat, packed, cfg),
    }
    _print_report(cfg, report)
    return report


def _print_report(cfg: ARPOConfig, r: dict) -> None:
    ro, a = cfg.rollout, cfg.algo
    print("ARPO engine demo — the trainer is not built yet; this runs the tree and the fused loss end to end.")
    print(f"  rollouts   {r['prompts']} prompts x M={ro.M} leaves (N={ro.N} initial paths, branches at tool "
          f"results, up to {ro.max_tool_calls} tool turns), synthetic tokens, random 0/1 rewards")
    print(f"  tree core  {r['implementation']}")
    print(f"  flat       {r['trajectories']} rows x {r['flat_shape'][1]} columns, {r['flat_tokens']:,} tokens, "
          f"{r['loss_tokens_flat']:,} in the loss")
    print(f"  packed     {r['unique_tokens']:,} unique tokens ({r['flat_tokens'] / r['unique_tokens']:.2f}x sharing), "
          f"{r['loss_tokens_packed']:,} in the loss")
    print(f"  time       build+advantages+flatten+pack: {r['implementation']} {r['seconds_native'] * 1e3:.1f} ms, "
          f"pure Python {r['seconds_python'] * 1e3:.1f} ms ({r['seconds_python'] / r['seconds_native']:.1f}x)")
    diff = abs(r["loss_flat"] - r["loss_packed"])
    print(f"  loss       fused clipped policy loss (advantage={a.advantage}, agg={a.agg}, clip {a.clip_low}/"
          f"{a.clip_high}): flat {r['loss_flat']:+.8f} in {r['seconds_loss_flat'] * 1e3:.1f} ms, packed "
          f"{r['loss_packed']:+.8f} in {r['seconds_loss_packed'] * 1e3:.1f} ms (|diff| {diff:.1e}); clipped "
          f"fraction {r['clip_frac_flat']:.4f} / {r['clip_frac_packed']:.4f}")
