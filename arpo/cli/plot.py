"""``arpo plot RUN_DIR``: PNG charts of a run's ``metrics.jsonl`` (matplotlib, no display needed).

One PNG per panel group, each panel a metric against the training step (metrics a run never logged are left
out; a group with none is not drawn):
  reward.png      reward, training accuracy, evaluation accuracy (overall and per task)
  tools.png       tool calls per trajectory (on the path; executed: a call before a fork runs once),
                  branches, fill-ups, finish reasons
  entropy.png     policy entropy, H_init / H_t of the rollouts, response length
  loss.png        loss, clip fractions, approx. KL (old→new), KL to the reference, gradient norm, lr
  throughput.png  generated tokens/s, trained tokens/s, prefix reuse, sharing ratio (flat / unique tokens)
  time.png        seconds per phase of a step (rollout, reward, update, weight sync), stacked
"""
from __future__ import annotations

import math
from pathlib import Path

from ..train.tracking import read_metrics

GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "reward": [("reward (train)", ["reward_mean"]), ("accuracy (train)", ["accuracy"]),
               ("accuracy (eval)", ["eval_accuracy", "eval_arith_accuracy", "eval_kbqa_accuracy"])],
    "tools": [("tool calls / trajectory", ["tool_calls_on_path_per_traj", "tool_executions_per_traj",
                                           "eval_tool_calls", "eval_tool_executions"]),
              ("branches & fill-ups", ["branches", "fills"]),
              ("finish reasons", ["finish_answer", "finish_length", "finish_eos", "finish_tool_limit"])],
    "entropy": [("policy entropy (trained tokens)", ["entropy_mean"]),
                ("rollout entropy / ln V", ["h_init_mean", "h_t_mean"]),
                ("response tokens", ["response_tokens_mean", "eval_response_tokens"])],
    "loss": [("loss", ["loss"]), ("clip fraction", ["clip_frac_high", "clip_frac_low", "dual_clip_frac"]),
             ("KL", ["approx_kl", "kl_mean"]), ("grad norm", ["grad_norm"]), ("learning rate", ["lr"])],
    "throughput": [("tokens / s", ["gen_tokens_per_s", "train_tokens_per_s"]),
                   ("prefix reuse", ["prefix_reuse", "shared_prefix_cached"]),
                   ("sharing ratio (flat / unique)", ["sharing_ratio"])],
}
PHASES = ["time_rollout", "time_reward", "time_update", "time_sync"]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _draw_group(plt, name: str, panels, records: list[dict], out: Path) -> Path | None:
    present = [(title, [k for k in keys if _series(records, k)[0]]) for title, keys in panels]
    present = [(title, keys) for title, keys in present if keys]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.3), squeeze=False)
    for ax, (title, keys) in zip(axes[0], present):
        for k in keys:
            xs, ys = _series(records, k)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=k)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_time(plt, records: list[dict], out: Path) -> Path | None:
    rows = [r for r in records if all(isinstance(r.get(k), (int, float)) for k in PHASES)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.3))
    steps = [r["step"] for r in rows]
    bottom = [0.0] * len(rows)
    for k in PHASES:
        vals = [r[k] for r in rows]
        ax.bar(steps, vals, bottom=bottom, label=k.removeprefix("time_"))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("step")
    ax.set_ylabel("seconds")
    ax.set_title("time per step", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the PNGs of ``run_dir`` into ``out`` (default ``RUN_DIR/plots``); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'}: no records yet")
    out = Path(out) if out is not None else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = [_draw_group(plt, name, panels, records, out) for name, panels in GROUPS.items()]
    paths.append(_draw_time(plt, records, out))
    return [p for p in paths if p is not None]
