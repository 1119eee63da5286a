"""The Python API: train and evaluate an agent with your own tools, reward and data, without editing the package.

    import arpo

    def convert(query: str) -> str:
        "converts '<value> <unit> to <unit>' between km, m and mi and returns the number."
        ...

    def reward(response: str, ground_truth: tuple[str, ...], example) -> float:
        ...

    trainer = arpo.Trainer({"train": {"total_steps": 20, "output_dir": "runs/mine"}},
                           tools={"convert": convert}, reward=reward,
                           train_data=[{"question": "...", "answer": "..."}, ...])
    trainer.train()
    print(trainer.last_metrics["reward_mean"])
    summary = arpo.evaluate_checkpoint("runs/mine/checkpoints/step_000020/policy", "my_test.jsonl",
                                       tools={"convert": convert}, reward=reward)

``arpo.Trainer`` is ``arpo.train.trainer.Trainer`` (its docstring lists every argument). Tools are callables
``(query: str) -> str | ToolResult``; the model reads their docstring (or ``description``) in its system
prompt and calls them as ``<name>query</name>`` (or, with ``tools.format: json``, as the chat template's tool
calls). A tool that raises, runs past ``tools.custom_timeout_s`` or returns something other than text gives the
model an error result; the rollout goes on. ``arpo.custom_tool(name, fn, description=..., argument=...)`` builds
one explicitly (to set its description or argument name).
"""
from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cli.eval import eval_records
from .config import ARPOConfig, ConfigError, as_config, load_config
from .envs.datasets import dataset_entries, load_rows, write_jsonl
from .tools.base import ToolResult, ToolSpec
from .tools.custom import custom_tool
from .train.trainer import Trainer

__all__ = ["ConfigError", "ToolResult", "ToolSpec", "Trainer", "custom_tool", "evaluate_checkpoint", "load_config"]


def evaluate_checkpoint(model: str | Path, data: str | Path | Iterable[Mapping] | Sequence[str], *,
                        config: ARPOConfig | dict | str | Path | None = None,
                        overrides: Sequence[str] | dict[str, Any] = (), tools: Mapping[str, Callable] | None = None,
                        reward: Callable | None = None, n: int = 1, temperature: float | None = None,
                        limit: int = 0, out_dir: str | Path | None = None, seed: int = 0,
                        quiet: bool = True) -> dict:
    """Evaluate the model directory ``model`` (a checkpoint's ``policy/``, or any transformers causal LM with a
    chat template) on ``data`` and return the summary (``accuracy``, ``reward``, ``by_source``, ...; see
    ``arpo.evaluate``).

    ``data``: a dataset file (``.jsonl`` / ``.parquet``), an embedded task name, a list of them, or rows (a list
    of dicts or a ``datasets.Dataset``). Greedy unless ``n`` > 1 or a ``temperature`` is given. ``out_dir``:
    write ``samples.jsonl`` and ``summary.json`` there (atomically). ``config``/``overrides``, ``tools`` and
    ``reward``: as ``arpo.Trainer``'s (the config's rollout and tools sections apply).
    """
    cfg = as_config(config, overrides)
    with tempfile.TemporaryDirectory(prefix="arpo-eval-") as tmp:
        entries = dataset_entries(data) or [str(write_jsonl(load_rows(data, "data"), Path(tmp) / "data.jsonl"))]
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, test=entries))
        summary, _ = eval_records(cfg, str(model), n=n, temperature=temperature, limit=limit, out_dir=out_dir,
                                  seed=seed, quiet=quiet, tools=tools, reward=reward)
    return summary
