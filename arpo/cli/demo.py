"""``arpo demo`` (``make demo``): the main job on the embedded default, end to end on 2 CPU cores.

1. evaluate the demo agent on the held-out test splits of the embedded tasks (questions it never saw, neither
   in its SFT data nor in RL training: see ``arpo/envs/tasks.py``): ``SAMPLES`` samples at the rollout
   temperature on every question — pass@1 with its standard error, pass@4 — and optionally greedy;
2. train it with ARPO (``configs/demo.yaml``) for a few minutes;
3. evaluate the trained policy the same way (same questions, same sampling seed);
4. print a before/after table with the change and its standard error (paired by question), and write
   ``RUN_DIR/report.md`` with the training curves (train reward, zero-advantage groups, tool calls on path vs
   executed) and the plots of the run.

A previous run directory is moved aside (``RUN_DIR.old-<time>``), never deleted. A SIGINT/SIGTERM during
training stops the job after the current step's checkpoint; the report then says at which step it stopped.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..config import ARPOConfig
from ..evaluate import mean_se, question_accuracy
from ..train import checkpoint as ckpt
from ..train.tracking import read_metrics
from ..train.trainer import Trainer
from .eval import eval_config, eval_records, run_eval, write_text_atomic
from .plot import plot_run

SAMPLES = 4


def _move_aside(run_dir: Path) -> Path | None:
    if not run_dir.exists():
        return None
    old = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.rename(run_dir, old)
    return old


def _evaluate(cfg: ARPOConfig, model_path: str, out: Path, limit: int, greedy: bool) -> dict:
    """SAMPLES samples per question at the rollout temperature on the first ``limit`` test questions of each
    task (0 = all), and greedy on the same questions when ``greedy``."""
    ecfg = eval_config(cfg, cfg.data.test)
    start = time.perf_counter()
    sampled, records = eval_records(ecfg, model_path, n=SAMPLES, temperature=cfg.rollout.temperature, limit=limit,
                                    out_dir=out / "sampled", seed=cfg.train.seed)
    result = {"sampled": sampled, "records": records}
    if greedy:
        result["greedy"] = run_eval(ecfg, model_path, limit=limit, out_dir=out / "greedy")
    result["seconds"] = time.perf_counter() - start
    return result


def paired_change(before: list[dict], after: list[dict], source: str | None = None) -> tuple[float, float]:
    """Mean change of per-question accuracy (fraction of a question's samples that are correct) and its
    standard error, pairing the two evaluations' records by question uid (``source``: one data source only)."""
    def per_question(records):
        return {r["uid"]: question_accuracy(r) for r in records if source is None or r["data_source"] == source}

    a, b = per_question(before), per_question(after)
    if set(a) != set(b):
        raise ValueError("paired_change: the two evaluations asked different questions")
    return mean_se([b[u] - a[u] for u in sorted(a)])


def _rows(before: dict, after: dict | None) -> list[tuple[str, ...]]:
    """(metric, before, after, change) rows per data source and overall."""
    rows = []
    t = before["sampled"]["temperature"]
    for src in [*before["sampled"]["by_source"], "all"]:
        def pick(r, kind="sampled", src=src):
            return r[kind] if src == "all" else r[kind]["by_source"][src]

        def row(label, get, fmt, change=""):
            rows.append((f"{src}: {label}", fmt(get(before)), fmt(get(after)) if after else "", change))

        change = ""
        if after is not None:
            mean, se = paired_change(before["records"], after["records"], None if src == "all" else src)
            change = f"{mean:+.3f} ± {se:.3f}"
        row(f"pass@1 (T={t}, {SAMPLES} samples) ± SE", lambda r: pick(r), lambda s: f"{s['accuracy']:.3f} ± "
            f"{s['accuracy_se']:.3f}", change)
        row(f"pass@{SAMPLES}", lambda r: pick(r)[f"pass@{SAMPLES}"], "{:.3f}".format)
        if "greedy" in before:
            row("accuracy (greedy)", lambda r: pick(r, "greedy")["accuracy"], "{:.3f}".format)
        row("tool calls / sample (on its path)", lambda r: pick(r)["tool_calls"], "{:.2f}".format)
        row(f"tool executions / question ({SAMPLES} samples)", lambda r: pick(r)["tool_executions_per_question"],
            "{:.2f}".format)
        row("response tokens / sample", lambda r: pick(r)["response_tokens"], "{:.1f}".format)
    rows.append(("wall time of the evaluation", f"{before['seconds']:.0f} s",
                 f"{after['seconds']:.0f} s" if after else "", ""))
    return rows


def _table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| metric | before | after | change ± SE (paired) |", "|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def training_summary(run_dir: Path, window: int = 3) -> str:
    """A table of the training steps' means over the first and the last ``window`` steps."""
    steps = [m for m in read_metrics(run_dir) if "reward_mean" in m]
    if not steps:
        return "No training step finished."
    keys = [("train reward", "reward_mean", "{:.3f}"), ("groups with zero advantage", "zero_adv_groups", "{:.2f}"),
            ("tool calls / trajectory, on its path", "tool_calls_on_path_per_traj", "{:.2f}"),
            ("tool executions / trajectory (a call before a branch runs once)", "tool_executions_per_traj",
             "{:.2f}"),
            ("tool executions / prompt", "tool_executions_per_prompt", "{:.2f}"),
            ("ARPO branches / step", "branches", "{:.1f}"), ("seconds / step", "time_step", "{:.1f}")]
    first, last = steps[:window], steps[-window:]
    lines = [f"| training metric | steps 1-{len(first)} | steps {steps[-len(last)]['step']}-{steps[-1]['step']} |",
             "|---|---|---|"]
    for label, key, fmt in keys:
        if all(key in m for m in steps):
            lines.append(f"| {label} | {fmt.format(np.mean([m[key] for m in first]))} | "
                         f"{fmt.format(np.mean([m[key] for m in last]))} |")
    return "\n".join(lines)


def _report(cfg: ARPOConfig, rows, trained: int, train_seconds: float, plots: list[Path], checkpoint: Path | None,
            limit: int, stopped: bool) -> str:
    r, t = cfg.rollout, cfg.train
    asked = "every question" if limit == 0 else f"the first {limit} questions of each task"
    pics = "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots)
    status = (f"**Training stopped by a signal after step {trained} of {t.total_steps}** (checkpointed; continue "
              f"with `arpo train --config ... --resume`); the trained policy was not evaluated."
              if stopped else f"{trained} steps")
    where = f"Trained policy: `{checkpoint / 'policy'}` (transformers `save_pretrained` format)." if checkpoint else ""
    return f"""# ARPO demo run

The embedded demo agent ({cfg.model.path}) trained with {r.mode.upper()} on {', '.join(cfg.data.train)}:
{status} ({t.batch_size} prompts x M={r.M} trajectories per step, N={r.N}, lr {t.lr}, `train.update: {t.update}`),
{train_seconds:.0f} s of training on this machine. Evaluated before and after on the held-out test splits
({', '.join(cfg.data.test)}; questions in neither the agent's SFT data nor RL training): {SAMPLES} samples at
temperature {r.temperature} on {asked}. SE of pass@1: standard error over questions; the change's SE pairs each
question's before and after accuracy.

{_table(rows)}

## Training

{training_summary(Path(t.output_dir))}

{where}
Metrics per step: `metrics.jsonl`; evaluation transcripts: `eval_before/`, `eval_after/`.

{pics}
"""


def run_demo(cfg: ARPOConfig, *, limit: int = 0, greedy: bool = False) -> dict:
    """Run the demo job; returns the before/after evaluations and the paths it wrote. ``limit`` caps the
    evaluated questions per task (0 = all); ``greedy`` adds a greedy evaluation."""
    run_dir = Path(cfg.train.output_dir)
    moved = _move_aside(run_dir)
    if moved is not None:
        print(f"previous {run_dir} moved to {moved}")
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    print(f"[1/3] evaluating {cfg.model.path} on the test splits of {', '.join(cfg.data.test)}")
    before = _evaluate(cfg, cfg.model.path, run_dir / "eval_before", limit, greedy)
    print(f"[2/3] training with {cfg.rollout.mode.upper()} for {cfg.train.total_steps} steps")
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.train()
    train_seconds = time.perf_counter() - t0
    final = ckpt.latest_checkpoint(run_dir)
    after = None
    if not trainer.interrupted:
        print(f"[3/3] evaluating the trained policy ({final / 'policy'})")
        after = _evaluate(cfg, str(final / "policy"), run_dir / "eval_after", limit, greedy)
    rows = _rows(before, after)
    report = run_dir / "report.md"
    text = _report(cfg, rows, trainer.final_step, train_seconds, plot_run(run_dir), final, limit,
                   trainer.interrupted)
    write_text_atomic(report, text)
    print("\n" + _table(rows) + "\n\n" + training_summary(run_dir))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; report: {report}")
    return {"before": before, "after": after, "report": report, "checkpoint": final,
            "stopped_at": trainer.final_step if trainer.interrupted else None}
