"""``arpo eval``: evaluate a transformers model (any causal LM with a chat template) on embedded tasks, ARPO
parquet files or ``{question, answer}`` JSONL files, with the tools, and write per-sample transcripts.

Greedy (top-k 1) when one sample per question is asked for and no temperature is given; otherwise ``n``
samples per question at ``temperature`` (default: ``rollout.temperature``), reported as pass@1 (accuracy)
and pass@k. Writes ``OUT/samples.jsonl`` (one record per question) and ``OUT/summary.json``, both atomically.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..config import ARPOConfig
from ..envs.datasets import load_prompts
from ..evaluate import evaluate
from ..models import load_causal_lm, load_tokenizer, pick_device


def eval_config(cfg: ARPOConfig, tasks: list[str], reward: str | None = None) -> ARPOConfig:
    """``cfg`` evaluating ``tasks`` (data.test entries) with ``reward`` (default: data.reward)."""
    data = dataclasses.replace(cfg.data, test=list(tasks), reward=reward or cfg.data.reward)
    return dataclasses.replace(cfg, data=data)


def load_policy(model_path: str, cfg: ARPOConfig):
    """(model in eval mode on the best device, tokenizer) from a local directory."""
    tokenizer = load_tokenizer(cfg.model.tokenizer or model_path, what=None)
    model = load_causal_lm(model_path, dtype=getattr(torch, cfg.model.dtype), device=pick_device(0))
    return model.eval().requires_grad_(False), tokenizer


def run_eval(cfg: ARPOConfig, model_path: str, **kwargs) -> dict:
    """Evaluate ``model_path`` on ``cfg.data.test``; returns the summary (see ``arpo.evaluate``); the keyword
    arguments are those of ``eval_records``."""
    return eval_records(cfg, model_path, **kwargs)[0]


def eval_records(cfg: ARPOConfig, model_path: str, *, n: int = 1, temperature: float | None = None, limit: int = 0,
                 out_dir: str | Path | None = None, seed: int = 0, model=None, tokenizer=None,
                 quiet: bool | None = None, tools: Mapping[str, Callable] | None = None,
                 reward: Callable | None = None) -> tuple[dict, list[dict]]:
    """Evaluate ``model_path`` (or an already loaded ``model``/``tokenizer``) on ``cfg.data.test``; returns the
    summary and the per-question records (see ``arpo.evaluate``) and writes them to ``out_dir`` when given.
    ``tools`` (user tools beside cfg.tools) and ``reward`` (instead of data.reward): as ``arpo.Trainer``'s."""
    from tqdm import tqdm

    from ..engines.hf import HFEngine
    from ..tools.toolbox import make_toolbox

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if model is None:
        model, tokenizer = load_policy(model_path, cfg)
    greedy = n == 1 and temperature is None
    rollout = dataclasses.replace(cfg.rollout, temperature=temperature or cfg.rollout.temperature)
    engine = HFEngine(model, tokenizer, token_budget=cfg.rollout.token_budget, seed=seed)
    with make_toolbox(cfg.tools, cfg.rollout.max_tool_calls, extra=tools) as box:
        box.call_format(tokenizer)  # tools.format json: a template without tools or a tool role fails here
        prompts = load_prompts(cfg, tokenizer, "test", tools=box.specs, limit=limit, no_bar=True if quiet else None)
        with tqdm(total=len(prompts), desc="eval", unit="q", leave=False, disable=True if quiet else None) as bar:
            summary, records = evaluate(engine, box, tokenizer, prompts, rollout,
                                        cfg.data.reward if reward is None else reward, n=n, greedy=greedy, seed=seed,
                                        progress=bar.update)
    summary.update(model=str(model_path), n=n, greedy=greedy, temperature=None if greedy else rollout.temperature)
    if out_dir is not None:
        write_outputs(Path(out_dir), summary, records)
    return summary, records


def write_outputs(out: Path, summary: dict, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def format_summary(summary: dict) -> str:
    """A plain-text table: one row per data source, then all."""
    ks = [k for k in summary if k.startswith("pass@") and k != "pass@1"]
    head = ["source", "questions", "accuracy", "± SE", *ks, "tool calls/sample (on path)", "tool executions/question",
            "response tokens"]
    rows = [[src, *_cells(s, ks)] for src, s in summary["by_source"].items()]
    rows.append(["all", *_cells(summary, ks)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head, *rows])


def _cells(s: dict, ks: list[str]) -> list[str]:
    return [str(s["questions"]), f"{s['accuracy']:.3f}", f"{s['accuracy_se']:.3f}", *(f"{s[k]:.3f}" for k in ks),
            f"{s['tool_calls']:.2f}", f"{s['tool_executions_per_question']:.2f}", f"{s['response_tokens']:.1f}"]
