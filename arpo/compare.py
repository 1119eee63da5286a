"""``arpo compare``: ARPO vs GRPO with the same rollout budget, over several seeds.

For each method (``rollout.mode`` arpo / grpo) and seed, train from the same starting model with the same
config (same M trajectories per prompt, prompts per step and steps: the same number of trajectories), then
evaluate the final policy greedily on the test splits. Reports mean ± std over seeds of test accuracy (overall
and per task), tool calls per trajectory (training rollouts, mean over steps), and the rollout tokens and
seconds each method spent. Writes ``OUT/report.md`` and ``OUT/compare.json``; a run whose final checkpoint
already exists is not trained again (an interrupted study resumes where it stopped).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .config import ARPOConfig, load_config
from .eval_job import eval_config, run_eval
from .train import checkpoint as ckpt
from .train.tracking import read_metrics
from .train.trainer import Trainer

METHODS = ("arpo", "grpo")


def _run_config(cfg: ARPOConfig, method: str, seed: int, out: Path) -> ARPOConfig:
    rollout = dataclasses.replace(cfg.rollout, mode=method)
    train = dataclasses.replace(cfg.train, seed=seed, output_dir=str(out / f"{method}-seed{seed}"), eval_every=0)
    return dataclasses.replace(cfg, rollout=rollout, train=train)


def _one_run(cfg: ARPOConfig, limit: int) -> dict:
    run_dir = Path(cfg.train.output_dir)
    final = ckpt.checkpoint_dir(run_dir, cfg.train.total_steps)
    saved = run_dir / "config.yaml"
    if saved.exists() and load_config(saved) != cfg:
        raise ValueError(f"{run_dir} was trained with a different config than this study's; remove it or pick "
                         "another --out")
    if not final.exists():
        latest = ckpt.latest_checkpoint(run_dir)
        Trainer(cfg, resume="latest" if latest else None).train()
    steps = [m for m in read_metrics(run_dir) if "reward_mean" in m]
    ev = run_eval(eval_config(cfg, cfg.data.test), str(final / "policy"), limit=limit, out_dir=run_dir / "eval_final")
    out = {"accuracy": ev["accuracy"], "tool_calls_per_traj": float(np.mean([m["tool_calls_per_traj"] for m in steps])),
           "rollout_tokens": float(sum(m["generated_tokens"] for m in steps)),
           "rollout_seconds": float(sum(m["time_rollout"] for m in steps)),
           "train_reward": float(np.mean([m["reward_mean"] for m in steps[-5:]]))}
    out.update({f"accuracy_{src}": s["accuracy"] for src, s in ev["by_source"].items()})
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def run_compare(cfg: ARPOConfig, seeds: list[int], out: str | Path, *, limit: int = 0) -> dict:
    """Train and evaluate every (method, seed); returns {method: {metric: [values per seed]}} and writes the
    report."""
    if len(seeds) < 1:
        raise ValueError("arpo compare needs at least one seed")
    out = Path(out)
    results: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for method in METHODS:
            print(f"== {method} seed {seed}")
            for k, v in _one_run(_run_config(cfg, method, seed, out), limit).items():
                results.setdefault(method, {}).setdefault(k, []).append(v)
    (out / "compare.json").write_text(json.dumps({"seeds": seeds, "results": results}, indent=2) + "\n")
    text = report(cfg, seeds, results)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    return results


def report(cfg: ARPOConfig, seeds: list[int], results: dict) -> str:
    keys = [k for k in results[METHODS[0]] if k.startswith("accuracy")] + [
        "tool_calls_per_traj", "train_reward", "rollout_tokens", "rollout_seconds"]
    lines = ["| metric | " + " | ".join(m.upper() for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for k in keys:
        cells = []
        for m in METHODS:
            mean, std = _mean_std(results[m][k])
            cells.append(f"{mean:,.0f} ± {std:,.0f}" if "tokens" in k or "seconds" in k else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    r, t = cfg.rollout, cfg.train
    return (f"# ARPO vs GRPO\n\n{len(seeds)} seeds ({', '.join(map(str, seeds))}); each run: {cfg.model.path}, "
            f"{t.total_steps} steps x {t.batch_size} prompts x M={r.M} trajectories (ARPO: N={r.N} initial, "
            f"branching at tool results), lr {t.lr}, `train.update: {t.update}`. Test accuracy: greedy, on "
            f"{', '.join(cfg.data.test)} (test splits). Mean ± std over seeds (sample std).\n\n"
            + "\n".join(lines) + "\n")
