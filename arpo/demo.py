"""``arpo demo`` (``make demo``): the main job on the embedded default, end to end on 2 CPU cores.

1. evaluate the demo agent on the held-out test splits of the embedded tasks: greedy on every question, and
   4 samples at the rollout temperature on the first ``SAMPLED_PER_TASK`` of each (pass@1, pass@4);
2. train it with ARPO (``configs/demo.yaml``) for a few minutes;
3. evaluate the trained policy the same way;
4. print a before/after table and write ``RUN_DIR/report.md`` with the plots of the run.

A previous run directory is moved aside (``RUN_DIR.old-<time>``), never deleted.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .config import ARPOConfig
from .eval_job import eval_config, run_eval
from .plot import plot_run
from .train import checkpoint as ckpt
from .train.trainer import Trainer

SAMPLED_PER_TASK = 50
SAMPLES = 4


def _move_aside(run_dir: Path) -> Path | None:
    if not run_dir.exists():
        return None
    old = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    os.rename(run_dir, old)
    return old


def _evaluate(cfg: ARPOConfig, model_path: str, out: Path, limits: tuple[int, int]) -> dict:
    """Greedy on the first limits[0] test questions of each task (0 = all) + SAMPLES samples on the first
    limits[1]."""
    ecfg = eval_config(cfg, cfg.data.test)
    start = time.perf_counter()
    greedy = run_eval(ecfg, model_path, limit=limits[0], out_dir=out / "greedy")
    sampled = run_eval(ecfg, model_path, n=SAMPLES, temperature=cfg.rollout.temperature, limit=limits[1],
                       out_dir=out / "sampled", seed=cfg.train.seed)
    return {"greedy": greedy, "sampled": sampled, "seconds": time.perf_counter() - start}


def _rows(before: dict, after: dict) -> list[tuple[str, str, str]]:
    rows = []
    sources = list(before["greedy"]["by_source"]) + ["all"]
    for src in sources:
        def pick(r, kind, key, src=src):
            s = r[kind] if src == "all" else r[kind]["by_source"][src]
            return s[key]

        for label, kind, key, fmt in (("accuracy (greedy)", "greedy", "accuracy", "{:.3f}"),
                                      (f"pass@1 (T={before['sampled']['temperature']})", "sampled", "accuracy",
                                       "{:.3f}"),
                                      (f"pass@{SAMPLES}", "sampled", f"pass@{SAMPLES}", "{:.3f}"),
                                      ("tool calls / question (greedy)", "greedy", "tool_calls", "{:.2f}"),
                                      ("response tokens (greedy)", "greedy", "response_tokens", "{:.1f}")):
            rows.append((f"{src}: {label}", fmt.format(pick(before, kind, key)), fmt.format(pick(after, kind, key))))
    rows.append(("wall time of the evaluation", f"{before['seconds']:.0f} s", f"{after['seconds']:.0f} s"))
    return rows


def _table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| metric | before | after |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _report(cfg: ARPOConfig, rows, train_seconds: float, plots: list[Path], checkpoint: Path,
            limits: tuple[int, int]) -> str:
    r, t = cfg.rollout, cfg.train
    greedy_on = "every question" if limits[0] == 0 else f"the first {limits[0]} questions of each task"
    pics = "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots)
    return f"""# ARPO demo run

The embedded demo agent ({cfg.model.path}) trained with {r.mode.upper()} on {', '.join(cfg.data.train)} for
{t.total_steps} steps ({t.batch_size} prompts x M={r.M} trajectories per step, N={r.N}, lr {t.lr},
`train.update: {t.update}`), {train_seconds:.0f} s of training on this machine. Evaluated before and after on the
held-out test splits ({', '.join(cfg.data.test)}): greedy on {greedy_on}, {SAMPLES} samples at temperature
{r.temperature} on the first {limits[1]} questions of each task.

{_table(rows)}

Trained policy: `{checkpoint / 'policy'}` (transformers `save_pretrained` format).
Metrics per step: `metrics.jsonl`; evaluation transcripts: `eval_before/`, `eval_after/`, `eval/`.

{pics}
"""


def run_demo(cfg: ARPOConfig, *, greedy_limit: int = 0, sampled_limit: int = SAMPLED_PER_TASK) -> dict:
    """Run the demo job; returns the before/after evaluations and the paths it wrote. The limits cap the
    evaluated questions per task (greedy_limit 0 = all)."""
    limits = (greedy_limit, sampled_limit)
    run_dir = Path(cfg.train.output_dir)
    moved = _move_aside(run_dir)
    if moved is not None:
        print(f"previous {run_dir} moved to {moved}")
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    print(f"[1/3] evaluating {cfg.model.path} on the test splits of {', '.join(cfg.data.test)}")
    before = _evaluate(cfg, cfg.model.path, run_dir / "eval_before", limits)
    print(f"[2/3] training with {cfg.rollout.mode.upper()} for {cfg.train.total_steps} steps (configs/demo.yaml)")
    t0 = time.perf_counter()
    Trainer(cfg).train()
    train_seconds = time.perf_counter() - t0
    final = ckpt.latest_checkpoint(run_dir)
    print(f"[3/3] evaluating the trained policy ({final / 'policy'})")
    after = _evaluate(cfg, str(final / "policy"), run_dir / "eval_after", limits)
    plots = plot_run(run_dir)
    rows = _rows(before, after)
    report = run_dir / "report.md"
    report.write_text(_report(cfg, rows, train_seconds, plots, final, limits), encoding="utf-8")
    print("\n" + _table(rows))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; report: {report}")
    return {"before": before, "after": after, "report": report, "checkpoint": final}
