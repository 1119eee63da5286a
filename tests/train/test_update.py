"""The update machinery: learning-rate schedule, old/reference log-probs, KL, gradient checkpointing, skipped
steps, and a real optimiser step against plain torch."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from arpo.config import AlgoConfig, TrainConfig
from arpo.models import load_causal_lm
from arpo.train.microbatch import micro_batches
from arpo.train.optim import TorchBackend, lr_factor
from arpo.train.policy import PolicyLogprobs, enable_activation_checkpointing
from arpo.train.update import attach_old_logprobs, micro_batch_loss, ppo_update

from .test_packed_vs_flat import _adv, _trees

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(str(DEMO))


def test_lr_schedule():
    cfg = TrainConfig(total_steps=10, warmup_steps=3, schedule="cosine")
    assert [round(lr_factor(s, cfg), 6) for s in range(3)] == [0.25, 0.5, 0.75]
    assert lr_factor(3, cfg) == 1.0
    assert lr_factor(3 + 7 // 2, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert lr_factor(10, cfg) == pytest.approx(0.0, abs=1e-12)
    const = TrainConfig(total_steps=10, warmup_steps=0, schedule="constant")
    assert {lr_factor(s, const) for s in range(10)} == {1.0}


def _batches(model, update="packed"):
    trees = _trees(model, seed=5, n=2)
    return [micro_batches(trees, _adv(trees), update=update, credit="soft", agg="token-mean", max_tokens=10_000,
                          pad_id=0)]


def test_reference_equal_to_policy_gives_zero_kl(model):
    policy = PolicyLogprobs(model)
    batches = _batches(model)
    algo = AlgoConfig(kl_coef=0.5)
    forwarded = attach_old_logprobs(lambda mb: policy(mb), batches, algo, ref_forward=lambda mb: policy(mb))
    mb = batches[0][0]
    assert forwarded == 2 * mb.tokens
    lp, ent = policy(mb)
    loss, metrics = micro_batch_loss(mb, lp, ent, algo)
    assert abs(float(metrics["kl_mean"])) < 1e-6
    loss0, _ = micro_batch_loss(mb, lp, ent, AlgoConfig(kl_coef=0.0))
    torch.testing.assert_close(loss, loss0, atol=1e-6, rtol=0)


def test_sampler_logprobs_mode(model):
    batches = _batches(model)
    attach_old_logprobs(None, batches, AlgoConfig(old_logprobs="sampler"))
    mb = batches[0][0]
    torch.testing.assert_close(mb.old_logprobs, mb.sampler_logprobs.float())
    mb.sampler_logprobs[3] = float("nan")
    with pytest.raises(ValueError, match="no sampler log-prob"):
        attach_old_logprobs(None, batches, AlgoConfig(old_logprobs="sampler"))


def test_gradient_checkpointing_gives_the_same_gradients(model):
    plain, ckpt = copy.deepcopy(model), copy.deepcopy(model)
    enable_activation_checkpointing(ckpt)
    grads = []
    for m in (plain, ckpt):
        (mb,) = _batches(m)[0]
        policy = PolicyLogprobs(m).train()
        mb.old_logprobs = mb.sampler_logprobs.float()
        lp, ent = policy(mb)
        loss, _ = micro_batch_loss(mb, lp, ent, AlgoConfig())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)


def test_one_update_equals_plain_torch_adamw(model):
    """ppo_update with one mini-batch = loss.backward + clip + torch AdamW step on the same loss."""
    cfg = TrainConfig(lr=1e-3, max_grad_norm=0.05, weight_decay=0.0)
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    batches = _batches(ours, update="flat")
    opt = TorchBackend(PolicyLogprobs(ours), cfg, torch.device("cpu"))
    algo = AlgoConfig()
    attach_old_logprobs(lambda mb: opt.forward(mb, train=False), batches, algo)
    metrics, _ = ppo_update(opt, batches, algo, 1, np.random.default_rng(0))
    policy = PolicyLogprobs(ref)
    total = sum(micro_batch_loss(mb, *policy(mb), algo)[0] for mb in batches[0])
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), cfg.max_grad_norm)
    assert metrics["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
    assert float(norm) > cfg.max_grad_norm  # the clip is active in this comparison
    torch.optim.AdamW(ref.parameters(), lr=cfg.lr, weight_decay=0.0).step()
    for (n, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_non_finite_gradient_skips_the_step(model):
    m = copy.deepcopy(model)
    opt = TorchBackend(PolicyLogprobs(m), TrainConfig(), torch.device("cpu"))
    before = {n: p.clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.full_like(p, float("inf"))
    assert math.isnan(opt.step())
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None


@pytest.mark.parametrize("update", ["packed", "flat"])
def test_an_on_policy_update_skips_the_old_logprob_pass_with_the_same_step(model, update):
    """One epoch over one mini-batch: no old-log-prob forward (0 tokens), and the same parameters after the
    step as with the recomputed old log-probs (the model has no dropout: recompute gives the current values);
    two epochs or two mini-batches still forward."""
    params = []
    for epochs in (None, 1):  # None: always recompute
        m = copy.deepcopy(model)
        batches = _batches(m, update=update)
        opt = TorchBackend(PolicyLogprobs(m), TrainConfig(lr=1e-3), torch.device("cpu"))
        forwarded = attach_old_logprobs(lambda mb: opt.forward(mb, train=False), batches, AlgoConfig(),
                                        epochs=epochs)
        assert (forwarded == 0) == (epochs == 1)
        assert all(mb.old_is_current == (epochs == 1) and (mb.old_logprobs is None) == (epochs == 1)
                   for mb in batches[0])
        metrics, _ = ppo_update(opt, batches, AlgoConfig(), 1, np.random.default_rng(0))
        assert metrics["ratio_min"] == pytest.approx(1.0, abs=1e-5) and metrics["ratio_max"] == pytest.approx(
            1.0, abs=1e-5)
        params.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    two_epochs = _batches(model, update=update)
    assert attach_old_logprobs(lambda mb: PolicyLogprobs(model)(mb), two_epochs, AlgoConfig(), epochs=2) > 0
    two_minis = _batches(model, update=update) * 2
    assert attach_old_logprobs(lambda mb: PolicyLogprobs(model)(mb), two_minis, AlgoConfig(), epochs=1) > 0
