"""ARPO rollouts on the demo agent with shared-prefix KV vs without (every request re-prefills its history).

Issue 6 workload: M=16, N=8 (paper defaults k=20, alpha=0.5, beta=0.2, tau=0.5), prompts from the test
splits of both embedded tasks, real tools (sandboxed python, kbqa search). Both runs use the same seed and the
same sampler code; only HFEngine(share_prefix=...) differs. Reported per run (extra_info): the fraction of
already-computed history tokens served from cache, prefix_reuse (cached / all tokens the engine processed),
generated tokens/s and the rollout's wall time. Run: make bench (or pytest bench/bench_rollout.py
--benchmark-only).
"""
import dataclasses
import platform
from pathlib import Path

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


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
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
