"""Evaluation: roll out each test prompt ``n`` times with the tools (greedy by default: top-k 1), score every
sample with the reward, and summarise per data source and overall.

Summary keys (per source under ``by_source``, and overall):
- ``accuracy``: fraction of samples with full reward, 1.0 (pass@1);
- ``accuracy_se``: its standard error clustered by question: with a_q the fraction of question q's samples
  that are correct, std(a_q, ddof=1) / sqrt(Q) over the Q questions (nan when Q < 2);
- ``pass@k`` for k = 1, 2, 4, ... up to n and k = n: the unbiased estimator of Chen et al. 2021 from the n
  samples of each question, 1 - C(n-c, k) / C(n, k) with c correct, averaged over questions;
- ``reward``: mean reward;
- ``tool_calls``: tool calls on a sample's path, per sample;
- ``tool_executions``: tool calls executed, per sample (the questions' executed calls summed, over the number
  of samples); ``tool_executions_per_question``: the same over the number of questions. Evaluation never
  branches, so each call runs for one sample only and this equals ``tool_calls``; the two differ only for
  branched (ARPO) rollouts, where a call made before a fork is on the paths of several leaves;
- ``response_tokens``: per sample, tool results included; ``questions``, ``samples``, ``seconds``.

Records: one dict per question with its samples' texts, rewards, finish reasons and tool calls (on path), and
the question's ``tool_executions``, for transcripts.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from .config import RolloutConfig
from .envs.rewards import score_rollouts
from .rollout.sampler import Rollout, Sampler

EVAL_CHUNK = 32  # prompts per sampler call (bounds the engine's KV memory)


def eval_rollout_config(cfg: RolloutConfig, n: int, greedy: bool) -> RolloutConfig:
    """``n`` independent samples per prompt, no branching; greedy = top-k 1 (the temperature is irrelevant)."""
    return dataclasses.replace(cfg, mode="grpo", M=n, N=n, top_k=1 if greedy else cfg.top_k)


def evaluate(engine, toolbox, tokenizer, prompts: Sequence, rollout: RolloutConfig, reward, *, n: int = 1,
             greedy: bool = True, seed: int = 0,
             progress: Callable[[int], None] | None = None) -> tuple[dict, list[dict]]:
    """Evaluate ``prompts`` (``arpo.envs.datasets.Prompt``s). ``progress(k)`` is called after each chunk of k
    prompts."""
    start = time.perf_counter()
    sampler = Sampler(engine, toolbox, tokenizer, eval_rollout_config(rollout, n, greedy), seed=seed)
    records: list[dict] = []
    for c in range(0, len(prompts), EVAL_CHUNK):
        chunk = prompts[c:c + EVAL_CHUNK]
        rollouts = sampler.rollout([list(p.ids) for p in chunk])
        scores = score_rollouts(reward, [p.example for p in chunk], rollouts)
        records += [_record(p.example, r, s) for p, r, s in zip(chunk, rollouts, scores)]
        if progress is not None:
            progress(len(chunk))
    return summarize(records, time.perf_counter() - start), records


def _record(example, rollout: Rollout, rewards: list[float]) -> dict:
    tree = rollout.tree
    samples = []
    for leaf, reward in zip(rollout.leaves, rewards):
        tokens = sum(len(tree.tokens(v)) for v in tree.path(leaf.node)[1:])
        samples.append({"text": leaf.text, "reward": reward, "finish": leaf.finish,
                        "tool_calls": leaf.tool_calls, "response_tokens": tokens})
    return {"uid": example.uid, "data_source": example.data_source, "question": example.question,
            "ground_truth": list(example.ground_truth), "tool_executions": rollout.tool_executions,
            "samples": samples}


def summarize(records: list[dict], seconds: float) -> dict:
    """Overall and per-data-source means over all samples (see the module docstring)."""
    out = _means(records)
    out["seconds"] = seconds
    sources = sorted({r["data_source"] for r in records})
    out["by_source"] = {s: _means([r for r in records if r["data_source"] == s]) for s in sources}
    return out


def _means(records: list[dict]) -> dict:
    samples = [s for r in records for s in r["samples"]]

    def mean(key, fn=float):
        return float(np.mean([fn(s[key]) for s in samples])) if samples else float("nan")

    executed = sum(r["tool_executions"] for r in records)
    out = {"accuracy": mean("reward", lambda x: float(x >= 1.0)), "accuracy_se": _accuracy_se(records),
           "reward": mean("reward"), "tool_calls": mean("tool_calls"),
           "tool_executions": executed / len(samples) if samples else float("nan"),
           "tool_executions_per_question": executed / len(records) if records else float("nan"),
           "response_tokens": mean("response_tokens"), "questions": len(records), "samples": len(samples)}
    n = min((len(r["samples"]) for r in records), default=0)
    for k in sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | ({n} if n else set())):
        out[f"pass@{k}"] = float(np.mean([pass_at_k(len(r["samples"]), _correct(r), k) for r in records]))
    return out


def _accuracy_se(records: list[dict]) -> float:
    """Standard error of the accuracy clustered by question: the SE of the per-question accuracies."""
    return mean_se([question_accuracy(r) for r in records if r["samples"]])[1]


def question_accuracy(record: dict) -> float:
    """The fraction of a question's samples that are correct."""
    return _correct(record) / len(record["samples"])


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error, std (ddof 1) / sqrt(n); the SE is nan for fewer than two values."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean()) if arr.size else float("nan")
    return mean, float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else float("nan")


def _correct(record: dict) -> int:
    return sum(s["reward"] >= 1.0 for s in record["samples"])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
