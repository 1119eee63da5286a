"""A flat batch is a packed batch with one copy per token: flat_terms by hand, and policy_loss (flat) ==
policy_loss_packed on flat_terms, value, gradient and metrics."""
from __future__ import annotations

import math

import pytest
import torch

from arpo_kernels import flat_terms, flat_weights, policy_loss, policy_loss_packed


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])  # numba, numba, torch ops
def test_flat_terms_by_hand(dtype):
    adv = torch.tensor([2.0, -1.0, 0.0, math.nan, 3.0], dtype=dtype)
    w = torch.tensor([0.5, 0.25, 0.25, 0.0, 0.0], dtype=dtype)  # the NaN and the 3.0 are off the mask
    t = flat_terms(adv, w)
    assert t.adv_pos.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert t.adv_neg.tolist() == [0.0, -0.25, 0.0, 0.0, 0.0]
    assert t.weight.tolist() == w.tolist()
    assert t.weight_pos.tolist() == [0.5, 0.0, 0.0, 0.0, 0.0]
    assert t.weight_neg.tolist() == [0.0, 0.25, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_bad_advantage_on_a_weighted_token_is_named(bad):
    lp = torch.zeros(3, requires_grad=True)
    adv = torch.tensor([1.0, bad, -1.0])
    with pytest.raises(ValueError, match="advantages has 1 NaN or inf"):
        policy_loss(lp, torch.zeros(3), adv, torch.ones(3, dtype=torch.bool), backend="numba")


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_flat_equals_packed_with_one_copy(backend):
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 50, generator=g, dtype=torch.float64) * 3
    old = lp + 0.3 * torch.randn(4, 50, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(4, 50, generator=g, dtype=torch.float64)
    ent = torch.rand(4, 50, generator=g, dtype=torch.float64)
    adv = torch.randn(4, 1, generator=g, dtype=torch.float64).expand(4, 50)
    mask = torch.rand(4, 50, generator=g) > 0.3
    opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.1, entropy_coef=0.01, backend=backend)
    x1, x2 = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    loss1, m1 = policy_loss(x1, old, adv, mask, ref_logprobs=ref, entropy=ent, agg="seq-mean-token-mean", **opts)
    w = flat_weights(mask, "seq-mean-token-mean")
    t = flat_terms(adv, w)
    loss2, m2 = policy_loss_packed(x2, old, t.adv_pos, t.adv_neg, t.weight, weight_pos=t.weight_pos,
                                   weight_neg=t.weight_neg, ref_logprobs=ref, entropy=ent, **opts)
    loss1.backward()
    loss2.backward()
    assert loss1.item() == loss2.item()
    assert torch.equal(x1.grad, x2.grad)
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_advantages_that_require_grad(backend):
    """Advantages from a differentiable value head: used as constants (only logprobs and entropy get gradients)."""
    lp = torch.zeros(3, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5], requires_grad=True)
    loss, _ = policy_loss(lp, torch.zeros(3), adv, torch.ones(3, dtype=torch.bool), backend=backend)
    loss.backward()
    assert adv.grad is None
    torch.testing.assert_close(lp.grad, -torch.tensor([1.0, -1.0, 0.5]) / 3)
