"""ARPO rollouts on the demo agent with shared-prefix KV vs without (every request re-prefills its history).

Issue 6 workload: M=16, N=8 (paper defaults k=20, alpha=0.5, beta=0.2, tau=0.5), prompts from the test
splits of both embedded tasks, real tools (sandboxed python, kbqa search). Both runs use the same seed and the
same sampler code; only HFEngine(share_prefix=...) differs. Reported per run (extra_info): the fraction of
already-computed history tokens served from cache, prefix_reuse (cached / all tokens the engine processed),
generated tokens/s and the rollout's wall time. Run: make bench (or pytest bench/bench_rollout.py
--benchmark-only).

Long-history workload: the same rollout, but both tools answer every call with a deterministic document of
300-600 tokens (``long_document``: a user tool through ``make_toolbox(extra=...)``, as ``arpo.Trainer(tools=)``
passes one), so histories grow by hundreds of tokens per call and re-prefilling them is most of the work.
"""
import dataclasses
import hashlib
import platform
import random
from pathlib import Path

import numba
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arpo_kernels import logprob_entropy

from arpo.config import RolloutConfig, ToolsConfig
from arpo.engines.hf import HFEngine
from arpo.envs.datasets import build_prompt
from arpo.envs.tasks import load_task
from arpo.rollout.sampler import Sampler
from arpo.tools.toolbox import make_toolbox

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-agent"
PROMPTS_PER_TASK = 4
LONG_RESULT_TOKENS = (300, 600)
WORDS = ("revenue", "founded", "city", "company", "year", "board", "river", "museum", "engineer", "market",
         "quarterly", "report", "north", "station", "product", "archive", "record", "budget", "office", "series")


@pytest.fixture(scope="module")
def setup():
    # one thread (torch and numba): on the shared 2-core machines two threads wait on a descheduled sibling, and
    # the same run took 1.8-39 s (5 runs); the other core is left to the tool processes
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(DEMO, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True, dtype=torch.float32).eval()
    examples = load_task("arith", "test")[:PROMPTS_PER_TASK] + load_task("kbqa", "test")[:PROMPTS_PER_TASK]
    prompts = [build_prompt(tok, e, ("python", "search")) for e in examples]
    logprob_entropy(torch.zeros(2, 8), torch.zeros(2, dtype=torch.long))  # numba's first-call compile, untimed
    return tok, model, prompts


@pytest.mark.parametrize("share", [True, False], ids=["shared-kv", "re-prefill"])
def test_arpo_rollout(benchmark, setup, share):
    tok, model, prompts = setup
    cfg = RolloutConfig(M=16, N=8, max_response_tokens=256, token_budget=1 << 16)
    box = make_toolbox(ToolsConfig(pool_size=2), max_calls=cfg.max_tool_calls)
    benchmark.group = f"ARPO rollout, demo agent, {len(prompts)} prompts x M=16 (N=8)"

    def run():
        sampler = Sampler(HFEngine(model, tok, share_prefix=share, token_budget=cfg.token_budget), box, tok,
                          cfg, seed=0)
        rollouts = sampler.rollout(prompts)
        return rollouts, sampler.last_metrics

    rollouts, metrics = benchmark.pedantic(run, rounds=1, iterations=1)
    box.close()
    assert all(len(r.leaves) == cfg.M for r in rollouts)
    benchmark.extra_info.update({k: round(v, 4) for k, v in metrics.items()})
    benchmark.extra_info.update({"share_prefix": share, "rollout": dataclasses.asdict(cfg),
                                 "machine": platform.processor() or platform.machine(),
                                 "torch_threads": torch.get_num_threads()})


def long_document(tok):
    """A tool answering any query with 300-600 tokens of text, the same for the same query."""

    def document(query: str) -> str:
        """Returns a long document about the query."""
        rng = random.Random(hashlib.sha256(query.encode()).digest())
        n = rng.randint(*LONG_RESULT_TOKENS)
        ids = tok.encode(" ".join(rng.choice(WORDS) for _ in range(n)), add_special_tokens=False)[:n]
        return tok.decode(ids)

    return document


@pytest.mark.parametrize("share", [True, False], ids=["shared-kv", "re-prefill"])
def test_arpo_rollout_long_history(benchmark, setup, share):
    tok, model, prompts = setup
    # room for three 600-token results; prompts are ~100 tokens, so positions stay within the model's 2048
    cfg = RolloutConfig(M=16, N=8, max_response_tokens=1920, token_budget=1 << 18)
    box = make_toolbox(ToolsConfig(enabled=[], pool_size=2, max_output_bytes=1 << 14), max_calls=cfg.max_tool_calls,
                       extra={"python": long_document(tok), "search": long_document(tok)})
    benchmark.group = f"ARPO rollout, tool results of 300-600 tokens, {len(prompts)} prompts x M=16 (N=8)"

    def run():
        sampler = Sampler(HFEngine(model, tok, share_prefix=share, token_budget=cfg.token_budget), box, tok,
                          cfg, seed=0)
        return sampler.rollout(prompts), sampler.last_metrics

    rollouts, metrics = benchmark.pedantic(run, rounds=1, iterations=1)
    box.close()
    results = [len(r.tree.tokens(n)) for r in rollouts for n in range(1, r.tree.num_nodes)
               if not r.tree.is_trainable(n)]  # the documents, and short error texts (e.g. a stray closing tag)
    documents = [n for n in results if n >= LONG_RESULT_TOKENS[0]]
    assert all(len(r.leaves) == cfg.M for r in rollouts) and documents
    benchmark.extra_info.update({k: round(v, 4) for k, v in metrics.items()})
    benchmark.extra_info.update({"share_prefix": share, "results": len(results), "documents": len(documents),
                                 "document_tokens_mean": round(sum(documents) / len(documents), 1),
                                 "rollout": dataclasses.asdict(cfg),
                                 "machine": platform.processor() or platform.machine(),
                                 "torch_threads": torch.get_num_threads()})
