"""One policy-update step with LoRA (model.lora_r > 0) vs full fine-tuning, in one run: step time and
optimizer memory.

Trees: synthetic ARPO-shaped rollouts (arpo.tree.synthetic: 2 prompts x 8 leaves, 4 initial paths, 2 tool
turns, ~32-token segments, rewards 0/1; 1,778 unique and 3,006 flat tokens) over the model's vocabulary,
tree-packed. One update step = the old-log-prob forward + one PPO epoch (forward/backward through
linear_logprob_entropy and policy_loss) + the AdamW step, with the trainer's own code
(arpo.train.optim.TorchBackend over arpo.train.policy.PolicyLogprobs; LoRA through arpo.models.add_lora, as the
trainer builds it). Reported (extra_info): trainable parameters, the bytes of AdamW's state after the step
(exp_avg + exp_avg_sq + step: what a checkpoint's trainer_state.pt holds) and of the gradients, tokens
forwarded, and the process CPU seconds of the fastest round (``cpu_s``). One torch thread: on the shared 2-core
machines wall time swings several-fold with the other tenants' load, and with 2 threads so does CPU time (OpenMP
threads spin while they wait for each other); one thread's CPU time is the work done.

Two models: the demo agent (1.5M parameters, hidden 160) and a wider random-initialised Qwen2 of the same
vocabulary (hidden 1024, 4 layers, intermediate 2816, 16 heads / 4 KV heads: 47.2M parameters), where the linear
layers dominate. LoRA: rank 16, alpha 32, every attention and MLP projection (the default model.lora_targets).
Run: pytest bench/bench_lora.py --benchmark-only (about 2 minutes on 2 cores).
"""
import copy
import platform
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from arpo.algos.advantages import get_estimator
from arpo.config import LORA_TARGETS, AlgoConfig, TrainConfig
from arpo.models import add_lora, load_causal_lm
from arpo.train.microbatch import micro_batches
from arpo.train.optim import TorchBackend
from arpo.train.policy import PolicyLogprobs
from arpo.train.update import attach_old_logprobs, ppo_update
from arpo.tree import TrajectoryTree
from arpo.tree.synthetic import build_tree, rollout_script

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-agent"
MICRO_TOKENS = 4096
RANK, ALPHA = 16, 32.0


def make_trees(vocab: int) -> list:
    rng = np.random.default_rng(0)
    return [build_tree(TrajectoryTree, rollout_script(rng, leaves=8, initial=4, tool_turns=2, segment_tokens=32,
                                                      prompt_tokens=48, vocab=vocab)) for _ in range(2)]


def wide_model(demo):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{**demo.config.to_dict(), "hidden_size": 1024, "intermediate_size": 2816,
                            "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 4,
                            "head_dim": 64, "layer_types": None})
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).float()


def backend(model, mode: str) -> TorchBackend:
    """The trainer's optimisation backend over ``model`` (a fresh copy), with LoRA adapters when mode is lora."""
    model = copy.deepcopy(model)
    if mode == "lora":
        torch.manual_seed(0)
        add_lora(model, r=RANK, alpha=ALPHA, targets=list(LORA_TARGETS))
    train = TrainConfig(lr=1e-5, micro_batch_tokens=MICRO_TOKENS)
    return TorchBackend(PolicyLogprobs(model, backend="auto"), train, torch.device("cpu"))


def update_step(opt: TorchBackend, trees) -> int:
    """One training step's update on ``trees`` (one mini-batch, packed); returns the tokens forwarded."""
    algo = AlgoConfig()
    adv = get_estimator(algo.estimator)([t.leaf_rewards() for t in trees], eps=algo.eps)
    batches = [micro_batches(trees, adv, update="packed", credit=algo.credit, agg=algo.agg, max_tokens=MICRO_TOKENS,
                             pad_id=0)]
    forwarded = attach_old_logprobs(lambda mb: opt.forward(mb, train=False), batches, algo)
    _, fwd = ppo_update(opt, batches, algo, 1, np.random.default_rng(0))
    return forwarded + fwd


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def one_thread() -> None:
    """torch and numba on one thread: its CPU time is the work done (no OpenMP spin-waits under load). (numba's
    OpenMP layer resets the thread count that torch shares with it, so both are set.)"""
    import numba

    numba.set_num_threads(1)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models():
    one_thread()
    demo = load_causal_lm(str(DEMO))
    update_step(backend(demo, "lora"), make_trees(demo.config.vocab_size))  # numba's first-call compiles, untimed
    return {"demo-agent": demo, "wide-1024": wide_model(demo)}


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("which", ["demo-agent", "wide-1024"])
def test_update_step(benchmark, models, mode, which):
    model = models[which]
    trees = make_trees(model.config.vocab_size)
    benchmark.group = f"update step, {which}: LoRA r={RANK} vs full fine-tuning"
    opts = []

    def setup():
        one_thread()
        opts.append(backend(model, mode))
        return (opts[-1], trees), {}

    cpu = []

    def timed(opt, trees):
        start = time.process_time()
        out = update_step(opt, trees)
        cpu.append(time.process_time() - start)
        return out

    rounds = 3 if which == "demo-agent" else 2
    forwarded = benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
    opt = opts[-1]
    trainable = sum(p.numel() for p in opt.params)
    benchmark.extra_info.update({
        "model": which, "mode": mode, "params": sum(p.numel() for p in opt.model.parameters()),
        "trainable_params": trainable, "optimizer_state_mb": round(state_bytes(opt.optimizer) / 2**20, 3),
        "grad_mb": round(sum(p.numel() * p.element_size() for p in opt.params) / 2**20, 3),
        "cpu_s": round(min(cpu), 3), "tokens_forwarded": forwarded,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads()})
    assert len(opt.optimizer.state) == len(opt.params)  # every trainable tensor was stepped
    assert torch.get_num_threads() == 1
