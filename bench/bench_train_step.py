"""One policy-update step on ARPO trees from the demo agent: tree-packed vs flat, in one run.

Trees: real ARPO rollouts (M=16, N=8, paper defaults, real tools) of 4 arith + 4 kbqa test prompts, scored
with their rewards. One update step = micro-batches + the old-log-prob forward + one PPO epoch
(forward/backward through linear_logprob_entropy and policy_loss) + the AdamW step, with the trainer's own
code (arpo.train). Both modes see the same trees, the same fresh copy of the model and the same micro-batch
budget; flat rows are length-sorted (least padding). Reported (extra_info): tokens forwarded per step,
unique and flat token counts, the sharing ratio (flat / unique) and trained tokens/s.
Goal (issue 7): tokens forwarded proportional to unique tokens, and packed >= 1.5x faster than flat when the
sharing ratio is >= 2. Run: make bench (or pytest bench/bench_train_step.py --benchmark-only).

Two models on the same trees: the demo agent itself (hidden 160: attention is a large share of its time, and
a dense tree mask makes packed rows pay for masked pairs too) and a wider random-initialised Qwen2 of the same
vocabulary (hidden 384, 2 layers), where the linear layers dominate as they do in real LLMs.
"""
import copy
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from arpo.algos.advantages import get_estimator
from arpo.config import AlgoConfig, RolloutConfig, ToolsConfig, TrainConfig
from arpo.engines.hf import HFEngine
from arpo.envs.datasets import build_prompt
from arpo.envs.rewards import get_reward_fn
from arpo.envs.tasks import load_task
from arpo.models import load_causal_lm
from arpo.rollout.sampler import Sampler
from arpo.tools.toolbox import make_toolbox
from arpo.train.microbatch import micro_batches
from arpo.train.optim import TorchBackend
from arpo.train.policy import PolicyLogprobs
from arpo.train.update import attach_old_logprobs, ppo_update

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-agent"
PROMPTS_PER_TASK = 4
MICRO_TOKENS = 8192


@pytest.fixture(scope="module")
def trees():
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(DEMO, local_files_only=True)
    model = load_causal_lm(str(DEMO)).eval()
    examples = load_task("arith", "test")[:PROMPTS_PER_TASK] + load_task("kbqa", "test")[:PROMPTS_PER_TASK]
    cfg = RolloutConfig(M=16, N=8, max_response_tokens=256, token_budget=1 << 16)
    box = make_toolbox(ToolsConfig(pool_size=2), max_calls=cfg.max_tool_calls)
    sampler = Sampler(HFEngine(model, tok, token_budget=cfg.token_budget), box, tok, cfg, seed=0)
    rollouts = sampler.rollout([build_prompt(tok, e, ("python", "search")) for e in examples])
    box.close()
    for ex, r in zip(examples, rollouts):
        fn = get_reward_fn("auto", ex.data_source)
        for leaf in r.leaves:
            r.tree.set_reward(leaf.node, float(fn(leaf.text, ex.ground_truth)))
    return model, [r.tree for r in rollouts]


def update_step(model, trees, update: str) -> int:
    """One training step's update on ``trees`` (one mini-batch); returns the tokens forwarded."""
    algo = AlgoConfig()
    opt = TorchBackend(PolicyLogprobs(model, backend="auto"), TrainConfig(lr=1e-6, micro_batch_tokens=MICRO_TOKENS),
                       torch.device("cpu"))
    adv = get_estimator(algo.estimator)([t.leaf_rewards() for t in trees], eps=algo.eps)
    batches = [micro_batches(trees, adv, update=update, credit=algo.credit, agg=algo.agg, max_tokens=MICRO_TOKENS,
                             pad_id=0)]
    forwarded = attach_old_logprobs(lambda mb: opt.forward(mb, train=False), batches, algo)
    _, fwd = ppo_update(opt, batches, algo, 1, np.random.default_rng(0))
    return forwarded + fwd


def wide_model(demo):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{**demo.config.to_dict(), "hidden_size": 384, "intermediate_size": 1024,
                            "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
                            "head_dim": 64, "layer_types": None})
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).float()


@pytest.mark.parametrize("update", ["packed", "flat"])
@pytest.mark.parametrize("which", ["demo-agent", "wide-384"])
def test_update_step(benchmark, trees, update, which):
    demo, ts = trees
    model = demo if which == "demo-agent" else wide_model(demo)
    fresh = copy.deepcopy(model)
    update_step(copy.deepcopy(model), ts, update)  # numba's first-call compiles, untimed
    benchmark.group = f"update step, {which}, {len(ts)} ARPO trees (M=16, N=8)"
    rounds = 3 if which == "demo-agent" else 2
    forwarded = benchmark.pedantic(lambda: update_step(copy.deepcopy(fresh), ts, update), rounds=rounds,
                                   iterations=1)
    unique = sum(t.num_tokens(unique=True) for t in ts)
    flat = sum(t.num_tokens(unique=False) for t in ts)
    benchmark.extra_info.update({
        "model": which, "params": sum(p.numel() for p in model.parameters()), "update": update,
        "tokens_forwarded": forwarded, "unique_tokens": unique, "flat_tokens": flat,
        "sharing_ratio": round(flat / unique, 3), "forwarded_per_unique": round(forwarded / unique, 3),
        "trained_tokens_per_s": round(flat / benchmark.stats.stats.mean, 1),
        "machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()})
    assert forwarded >= 2 * unique  # the old-log-prob pass plus one epoch
