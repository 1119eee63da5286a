"""Where a run's numbers go: ``RUN_DIR/metrics.jsonl`` (one JSON object per training step, written with one
``write`` and flushed to disk, so a crash never leaves half a line), TensorBoard and W&B when
``train.loggers`` asks for them, and a one-line summary per step on the terminal.

A resumed run first drops the lines after its checkpoint's step (the file is rewritten atomically), so
``metrics.jsonl`` holds each step once.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (a missing file is an error naming it)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is {run_dir} a training run directory?)")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not a JSON object: {err}") from None
    return out


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)


class MetricsLogger:
    """Sinks for per-step metric dicts (flat ``{name: number}``, ``step`` included)."""

    def __init__(self, run_dir: str | Path, loggers: list[str], config: dict, *, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate_after(self.path, resume_step)
        self._tb = self._wandb = None
        if "tensorboard" in loggers:
            self._tb = _tensorboard(Path(run_dir), resume_step)
        if "wandb" in loggers:
            self._wandb = _wandb(Path(run_dir), config)

    def log(self, record: dict) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        step = int(record["step"])
        numbers = {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in numbers.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; plots skip None
    return v


def _tensorboard(run_dir: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise RuntimeError("train.loggers includes 'tensorboard' but the tensorboard package is not installed "
                           f"(pip install tensorboard): {err}") from None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)


def _wandb(run_dir: Path, config: dict):
    try:
        import wandb
    except ImportError:
        raise RuntimeError("train.loggers includes 'wandb' but wandb is not installed (pip install wandb)") from None
    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
    id_file.write_text(run_id)
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "arpo"), name=run_dir.name, id=run_id,
                      resume="allow", dir=str(run_dir), config=config)


def summary_line(m: dict, total_steps: int) -> str:
    """One line per step for the terminal."""
    def f(key, fmt="{:.3f}"):
        v = m.get(key)
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)

    parts = [f"step {m['step']}/{total_steps}", f"reward {f('reward_mean')}", f"acc {f('accuracy')}",
             f"tools/traj path {f('tool_calls_on_path_per_traj', '{:.2f}')}"
             f" exec {f('tool_executions_per_traj', '{:.2f}')}",
             f"branches {f('branches', '{:.0f}')}",
             f"H {f('entropy_mean')}", f"kl {f('approx_kl', '{:.2e}')}", f"clip {f('clip_frac', '{:.3f}')}",
             f"gnorm {f('grad_norm', '{:.2f}')}",
             f"{f('time_step', '{:.1f}')}s (rollout {f('time_rollout', '{:.1f}')}, update {f('time_update', '{:.1f}')})"]
    if "eval_accuracy" in m:
        parts.append(f"eval acc {f('eval_accuracy')}")
    return " | ".join(parts)
