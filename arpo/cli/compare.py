"""``arpo compare``: ARPO vs GRPO (and a control that should not work) at the same rollout budget, over seeds.

Arms (each trained from the same starting model with the same config, then evaluated on the test splits with
``samples`` samples per question at the rollout temperature — pass@1):

- ``arpo``: ARPO, rule ``threshold`` (the paper's);  ``arpo-stochastic``: ARPO, rule ``stochastic`` (the
  official code's);  ``grpo``: GRPO with the same M trajectories per prompt (same rollout budget);
- ``grpo-matched``: GRPO with a smaller M' chosen so that it executes about as many tool calls per prompt as
  ARPO does (``M' = round(M · E_arpo / E_grpo)`` from the finished ``arpo`` and ``grpo`` runs' tool executions
  per prompt, or ``matched_m``): accuracy per tool call;
- ``control`` (``--control``): the ``arpo`` arm with ``data.reward: random`` (Bernoulli(data.random_reward_p),
  independent of the answer): what the optimiser alone does to the model with the same budget.

Reported per arm, mean ± standard error over seeds: test accuracy (overall, per task), tool executions per
trajectory (each executed call once, however many branches share it) and calls on a trajectory's path, tool
executions per prompt, generated tokens and rollout seconds of training, train reward, the fraction of groups
with zero advantage; and each arm's test-accuracy difference to ``grpo``, paired by seed. Writes
``OUT/report.md`` and ``OUT/compare.json`` (atomically). A run whose final checkpoint exists is not trained
again, an interrupted run resumes from its newest checkpoint, and a run interrupted by a signal ends the study
with a report that says where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..config import ARPOConfig, load_config
from ..train import checkpoint as ckpt
from ..train.tracking import read_metrics
from ..train.trainer import Trainer
from .eval import eval_config, run_eval, write_text_atomic

ARMS = ("arpo", "arpo-stochastic", "grpo", "grpo-matched", "control")
DEFAULT_ARMS = ("arpo", "arpo-stochastic", "grpo", "grpo-matched")
TRAIN_KEYS = ("tool_executions_per_traj", "tool_calls_on_path_per_traj", "tool_executions_per_prompt",
              "zero_adv_groups")


class StudyInterrupted(RuntimeError):
    """A run of the study was stopped by a signal (it is checkpointed; rerunning the study resumes it)."""


def arm_config(cfg: ARPOConfig, arm: str, seed: int, out: Path, matched_m: int | None = None) -> ARPOConfig:
    """The config of ``arm`` for training seed ``seed``, writing to ``out/<arm>-seed<seed>``."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    r, data = cfg.rollout, cfg.data
    if arm in ("arpo", "control"):
        r = dataclasses.replace(r, mode="arpo", rule="threshold")
    elif arm == "arpo-stochastic":
        r = dataclasses.replace(r, mode="arpo", rule="stochastic")
    elif arm == "grpo":
        r = dataclasses.replace(r, mode="grpo")
    else:
        if matched_m is None:
            raise ValueError("the grpo-matched arm needs its M (matched_m)")
        r = dataclasses.replace(r, mode="grpo", M=matched_m, N=min(r.N, matched_m))
    if arm == "control":
        data = dataclasses.replace(data, reward="random")
    train = dataclasses.replace(cfg.train, seed=seed, output_dir=str(out / f"{arm}-seed{seed}"), eval_every=0)
    return dataclasses.replace(cfg, rollout=r, data=data, train=train)


def _train(cfg: ARPOConfig) -> Path:
    """Train ``cfg``'s run (resuming it when checkpoints exist); returns its final checkpoint."""
    run_dir = Path(cfg.train.output_dir)
    final = ckpt.checkpoint_dir(run_dir, cfg.train.total_steps)
    saved = run_dir / "config.yaml"
    if saved.exists() and load_config(saved) != cfg:
        raise ValueError(f"{run_dir} was trained with a different config than this study's; remove it or pick "
                         "another --out")
    if not final.exists():
        trainer = Trainer(cfg, resume="latest" if ckpt.latest_checkpoint(run_dir) else None)
        trainer.train()
        if trainer.interrupted:
            raise StudyInterrupted(f"{run_dir.name} stopped by a signal after step {trainer.final_step} of "
                                   f"{cfg.train.total_steps}")
    return final


def _one_run(cfg: ARPOConfig, samples: int, limit: int, reward: str) -> dict:
    """Train (or reuse) one run and evaluate its final policy with ``reward`` (the study's real reward, also for
    the control); returns its numbers."""
    final = _train(cfg)
    run_dir = Path(cfg.train.output_dir)
    steps = [m for m in read_metrics(run_dir) if "reward_mean" in m]
    ev = run_eval(eval_config(cfg, cfg.data.test, reward=reward), str(final / "policy"), n=samples,
                  temperature=cfg.rollout.temperature, limit=limit, out_dir=run_dir / "eval_final", quiet=True)
    out = {"accuracy": ev["accuracy"], "eval_accuracy_se": ev["accuracy_se"],
           "eval_tool_calls": ev["tool_calls"],
           "rollout_tokens": float(sum(m["generated_tokens"] for m in steps)),
           "rollout_seconds": float(sum(m["time_rollout"] for m in steps)),
           "train_reward": float(np.mean([m["reward_mean"] for m in steps[-5:]])), "M": float(cfg.rollout.M)}
    out.update({k: float(np.mean([m[k] for m in steps])) for k in TRAIN_KEYS})
    out.update({f"accuracy_{src}": s["accuracy"] for src, s in ev["by_source"].items()})
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(arr.size)) if arr.size > 1 else 0.0


def matched_m(cfg: ARPOConfig, results: dict) -> int:
    """GRPO's M with about ARPO's tool executions per prompt: round(M · E_arpo / E_grpo), at least 2."""
    e_arpo = np.mean(results["arpo"]["tool_executions_per_prompt"])
    e_grpo = np.mean(results["grpo"]["tool_executions_per_prompt"])
    return max(2, min(cfg.rollout.M, int(round(cfg.rollout.M * e_arpo / max(e_grpo, 1e-9)))))


def run_compare(cfg: ARPOConfig, seeds: list[int], out: str | Path, *, arms: tuple[str, ...] = DEFAULT_ARMS,
                control: bool = False, samples: int = 4, limit: int = 0, m_matched: int | None = None) -> dict:
    """Train and evaluate every (arm, seed); returns {arm: {metric: [values per seed]}} and writes the report
    (also when a signal stopped a run: the report then says which and where)."""
    if len(seeds) < 1:
        raise ValueError("arpo compare needs at least one seed")
    arms = tuple(arms) + (("control",) if control and "control" not in arms else ())
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; arms: {', '.join(ARMS)}")
    if "grpo-matched" in arms and m_matched is None and not {"arpo", "grpo"} <= set(arms):
        raise ValueError("the grpo-matched arm needs the arpo and grpo arms (or an explicit matched M)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, list[float]]] = {}
    stopped = None
    try:
        for arm in [a for a in arms if a != "grpo-matched"] + [a for a in arms if a == "grpo-matched"]:
            if arm == "grpo-matched" and m_matched is None:
                m_matched = matched_m(cfg, results)
            for seed in seeds:
                print(f"== {arm} seed {seed}")
                for k, v in _one_run(arm_config(cfg, arm, seed, out, m_matched), samples, limit, cfg.data.reward).items():
                    results.setdefault(arm, {}).setdefault(k, []).append(v)
    except StudyInterrupted as err:
        stopped = str(err)
    saved = {"seeds": seeds, "samples": samples, "matched_m": m_matched, "stopped": stopped, "results": results}
    write_text_atomic(out / "compare.json", json.dumps(saved, indent=2) + "\n")
    text = report(cfg, seeds, results, samples, stopped)
    write_text_atomic(out / "report.md", text)
    print(text)
    return results


_LABELS = {"accuracy": "test accuracy (pass@1)", "tool_executions_per_traj": "tool executions / trajectory",
           "tool_calls_on_path_per_traj": "tool calls on path / trajectory",
           "tool_executions_per_prompt": "tool executions / prompt", "rollout_tokens": "generated tokens (train)",
           "rollout_seconds": "rollout seconds (train)", "train_reward": "train reward (last 5 steps)",
           "zero_adv_groups": "groups with zero advantage", "M": "trajectories per prompt (M)",
           "eval_tool_calls": "tool calls / test answer"}


def _cell(key: str, values: list[float]) -> str:
    mean, se = mean_se(values)
    if key in ("rollout_tokens", "rollout_seconds", "M"):
        return f"{mean:,.0f} ± {se:,.0f}"
    return f"{mean:.3f} ± {se:.3f}"


def _differences(results: dict, seeds: list[int]) -> list[str]:
    """Test-accuracy difference of each arm to grpo, paired by seed (only where both have every seed)."""
    base = results.get("grpo", {}).get("accuracy", [])
    lines = []
    for arm in [a for a in ARMS if a in results and a != "grpo"]:
        res = results[arm]
        if len(base) == len(seeds) == len(res["accuracy"]):
            mean, se = mean_se([a - b for a, b in zip(res["accuracy"], base)])
            lines.append(f"| {arm} − grpo | {mean:+.3f} ± {se:.3f} |")
    return ["| test accuracy difference (paired by seed) | mean ± SE |", "|---|---|", *lines] if lines else []


def report(cfg: ARPOConfig, seeds: list[int], results: dict, samples: int = 4, stopped: str | None = None) -> str:
    arms = [a for a in ARMS if a in results]
    if not arms:
        return f"# ARPO vs GRPO\n\nNo run finished. {stopped or ''}\n"
    first = results[arms[0]]
    keys = [k for k in first if k.startswith("accuracy")] + [k for k in _LABELS if k in first and k != "accuracy"]
    lines = ["| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for k in keys:
        label = _LABELS.get(k, f"test accuracy, {k.removeprefix('accuracy_')}")
        lines.append(f"| {label} | " + " | ".join(_cell(k, results[a][k]) for a in arms) + " |")
    r, t = cfg.rollout, cfg.train
    note = f"\n**Interrupted**: {stopped}; rerun the same command to resume.\n" if stopped else ""
    return (f"# ARPO vs GRPO\n\n{len(seeds)} seeds ({', '.join(map(str, seeds))}); each run: {cfg.model.path}, "
            f"{t.total_steps} steps x {t.batch_size} prompts x M={r.M} trajectories (ARPO: N={r.N} initial, "
            f"branching at tool results), lr {t.lr}, `train.update: {t.update}`, trained on "
            f"{', '.join(cfg.data.train)}. Test accuracy: {samples} samples per question at T={r.temperature} on "
            f"{', '.join(cfg.data.test)} (test splits). Mean ± standard error over seeds. The control is ARPO "
            f"trained on a random reward (p = {cfg.data.random_reward_p}).\n{note}\n"
            + "\n".join(lines) + "\n\n" + "\n".join(_differences(results, seeds)) + "\n")
