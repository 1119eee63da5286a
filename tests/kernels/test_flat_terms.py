"""A flat batch is a packed batch with one copy per token: flat_terms by hand, and policy_loss (flat) ==
policy_loss_packed on flat_terms, value, gradient and metrics; the numba flat path (terms split inside the kernel,
the gradient handed to autograd as the kernel wrote it) bit for bit, wherever its arrays sit in memory."""
from __future__ import annotations

import math

import pytest
import torch

from arpo_kernels import flat_terms, flat_weights, policy_loss, policy_loss_packed, policy_loss_reference


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
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_flat_equals_packed_with_one_copy(backend, agg):
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(4, 50, generator=g, dtype=torch.float64) * 3
    old = lp + 0.3 * torch.randn(4, 50, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(4, 50, generator=g, dtype=torch.float64)
    ent = torch.rand(4, 50, generator=g, dtype=torch.float64)
    adv = torch.randn(4, 1, generator=g, dtype=torch.float64).expand(4, 50)
    mask = torch.rand(4, 50, generator=g) > 0.3
    opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.1, entropy_coef=0.01, backend=backend)
    x1, x2 = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    loss1, m1 = policy_loss(x1, old, adv, mask, ref_logprobs=ref, entropy=ent, agg=agg, **opts)
    w = flat_weights(mask, agg)
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


# ---- the numba flat path: terms split inside the kernel, gradients handed to autograd without a copy ----------
def _flat_batch(n, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(n, generator=g, dtype=torch.float64) * 3
    old = lp + torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    ref = lp + torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    ent = torch.rand(n, generator=g, dtype=torch.float64) * 2
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    adv[::7] = 0.0
    mask = torch.rand(n, generator=g) > 0.25
    return [t.to(dtype) for t in (lp, old, ref, ent, adv)] + [mask]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32, torch.int64])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
def test_numba_flat_equals_packed_bit_for_bit(dtype, mask_dtype, agg):
    """Over several kernel chunks (16384 tokens) and a partial last block: the flat form (terms split inside the
    kernel, token-mean weight from the mask's count) equals the packed form on flat_terms(flat_weights) exactly."""
    n = 3 * 16384 + 1029
    lp, old, ref, ent, adv, mask = _flat_batch(n, dtype)
    seq = torch.arange(n) // 1000
    opts = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.1, entropy_coef=0.01, backend="numba")
    x1, e1 = lp.clone().requires_grad_(), ent.clone().requires_grad_()
    x2, e2 = lp.clone().requires_grad_(), ent.clone().requires_grad_()
    loss1, m1 = policy_loss(x1, old, adv, mask.to(mask_dtype), ref_logprobs=ref, entropy=e1, agg=agg, seq_index=seq,
                            **opts)
    t = flat_terms(adv, flat_weights(mask, agg, seq, dtype=dtype))
    loss2, m2 = policy_loss_packed(x2, old, t.adv_pos, t.adv_neg, t.weight, weight_pos=t.weight_pos,
                                   weight_neg=t.weight_neg, ref_logprobs=ref, entropy=e2, **opts)
    (loss1 + loss2).backward()
    assert loss1.dtype == dtype and loss1.item() == loss2.item()
    assert torch.equal(x1.grad, x2.grad) and torch.equal(e1.grad, e2.grad)
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)


def test_numba_flat_matches_the_fp64_reference_over_many_chunks():
    n = 5 * 16384 + 333
    lp, old, ref, ent, adv, mask = _flat_batch(n, torch.float64, seed=3)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, ref_logprobs=ref, kl_coef=0.05, entropy_coef=0.01)
    x, e = lp.clone().requires_grad_(), ent.clone().requires_grad_()
    policy_loss_reference(x, old, adv, mask, entropy=e, **kw).backward()
    y, f = lp.clone().requires_grad_(), ent.clone().requires_grad_()
    loss, m = policy_loss(y, old, adv, mask, entropy=f, backend="numba", **kw)
    loss.backward()
    want = policy_loss_reference(lp, old, adv, mask, entropy=ent, **kw)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(f.grad, e.grad, rtol=1e-12, atol=1e-14)
    r = torch.exp(lp - old)[mask]
    assert m["ratio_min"].item() == r.min().item() and m["ratio_max"].item() == r.max().item()


def test_numba_results_do_not_depend_on_where_the_arrays_sit():
    """The same values at other addresses (offsets into larger buffers, neighbours close in memory) give the same
    bits: the kernel's sums take one vectorised path whatever the arrays' alignment or distance."""
    n = 16384 + 77
    lp, old, ref, ent, adv, mask = _flat_batch(n, torch.float32, seed=4)
    results = []
    for offset in (0, 1, 3, 16):
        def placed(t):
            buf = torch.empty(n + 32, dtype=t.dtype)
            buf[offset:offset + n] = t
            return buf[offset:offset + n]
        x = placed(lp).requires_grad_()
        loss, m = policy_loss(x, placed(old), placed(adv), placed(mask), ref_logprobs=placed(ref), kl_coef=0.1,
                              entropy=placed(ent), entropy_coef=0.01, dual_clip=2.0, backend="numba")
        loss.backward()
        results.append((loss.item(), x.grad.clone(), {k: v.item() for k, v in m.items()}))
    for loss, grad, m in results[1:]:
        assert loss == results[0][0] and torch.equal(grad, results[0][1]) and m == results[0][2]


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_backward_scales_and_accumulates(backend):
    """The CPU gradient of loss.backward() is the kernel's buffer itself (no copy); other upstream gradients
    scale it, a retained graph's second backward and a loss used twice accumulate, and .grad never aliases a
    buffer the graph still holds."""
    lp, old, ref, ent, adv, mask = _flat_batch(1000, torch.float64, seed=5)

    def grad_of(scale=1.0, twice=False, retain=False):
        x = lp.clone().requires_grad_()
        loss, _ = policy_loss(x, old, adv, mask, backend=backend)
        if twice:
            (loss + loss).backward()
        elif retain:
            loss.backward(retain_graph=True)
            first = x.grad.clone()
            loss.backward()
            return first, x.grad
        else:
            (scale * loss).backward()
        return x.grad

    g1 = grad_of()
    x = lp.clone().requires_grad_()
    want = torch.autograd.grad(policy_loss_reference(x, old, adv, mask), x)[0]
    torch.testing.assert_close(g1, want, rtol=1e-12, atol=1e-14)
    assert torch.equal(grad_of(scale=-3.0), -3.0 * g1)
    assert torch.equal(grad_of(twice=True), 2 * g1)
    first, second = grad_of(retain=True)
    assert torch.equal(first, g1) and torch.equal(second, 2 * g1)


def test_numba_gradient_is_not_copied():
    """loss.backward() on the CPU: .grad is the buffer the kernel wrote (no g·d pass, no copy)."""
    lp, old, ref, ent, adv, mask = _flat_batch(4096, torch.float32, seed=6)
    x = lp.clone().requires_grad_()
    loss, _ = policy_loss(x, old, adv, mask, backend="numba")
    saved = loss.grad_fn.saved_tensors[0]
    ptr, want = saved.data_ptr(), saved.clone()
    del saved  # autograd may only hand over a buffer nobody else holds
    loss.backward()
    assert x.grad.data_ptr() == ptr and torch.equal(x.grad, want)
