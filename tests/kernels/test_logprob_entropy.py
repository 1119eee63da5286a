"""logprob_entropy on every backend against the fp64 torch reference: values, gradients (fp64 gradcheck),
low-precision error relative to torch's own error in that dtype, ignore_index rows, in-place gradients, and
clear errors for bad inputs."""
import math

import pytest
import torch

from arpo_kernels import logprob_entropy, logprob_entropy_reference
from arpo_kernels.reference import torch_eager_logprob_entropy

from .common import device_for, make_logits, make_targets, skip_triton_without_runtime

# every backend implements the same kernel interface (torch: the same math in chunked torch ops); the fp64 autograd
# chain of arpo_kernels.reference is what they are compared with
KERNELS = [pytest.param("triton", marks=skip_triton_without_runtime), "numba", "torch"]


def loss_and_grad(fn, x, t, g_lp, g_h, **kw):
    x = x.detach().clone().requires_grad_()
    lp, ent = fn(x, t, **kw)
    (lp.double() * g_lp.to(lp.device) + ent.double() * g_h.to(lp.device)).sum().backward()
    return lp.detach(), ent.detach(), x.grad


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("n, v", [(1, 7), (5, 1000), (4, 4099)])
@pytest.mark.parametrize("kind", ["randn", "peaked", "uniform"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fp32_matches_fp64_reference(backend, n, v, kind, temperature):
    dev = device_for(backend)
    x = make_logits(kind, n, v, device=dev)
    t = make_targets(n, v, dev, ignore=[2] if n > 2 else [])
    g_lp, g_h = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    lp, ent, grad = loss_and_grad(logprob_entropy, x, t, g_lp, g_h, temperature=temperature, backend=backend)
    r_lp, r_ent, r_grad = loss_and_grad(
        logprob_entropy_reference, x.cpu().double(), t.cpu(), g_lp, g_h, temperature=temperature)
    assert lp.dtype == ent.dtype == torch.float32 and grad.dtype == torch.float32
    # fp32 inputs: each z carries 2^-24 relative rounding and exp ~2 ulp; log-probs reach |z| ~ 30 (peaked),
    # so absolute 1e-5 on the outputs and 1e-6 on the gradient entries (each |dz| <= |g|·(1 + |z - Σpz|)·p).
    torch.testing.assert_close(lp.cpu().double(), r_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.cpu().double(), r_ent, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad.cpu().double(), r_grad, rtol=1e-5, atol=1e-6)
    if kind == "uniform":
        assert torch.allclose(ent.cpu()[t.cpu() != -100].double(), torch.tensor(math.log(v), dtype=torch.float64))


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_gradcheck_fp64(backend, temperature):
    dev = device_for(backend)
    x = make_logits("randn", 4, 37, torch.float64, dev).requires_grad_()
    t = make_targets(4, 37, dev, ignore=[1])
    assert torch.autograd.gradcheck(
        lambda a: logprob_entropy(a, t, temperature=temperature, backend=backend), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["randn", "peaked"])
def test_low_precision_error_at_most_twice_torch(backend, dtype, kind):
    """Same rounded inputs for everyone; the error is measured against fp64 math on those inputs, as the L2 norm
    over all outputs (the max over elements is dominated by the final rounding to bf16/fp16, which both sides
    share and which falls closer or farther by chance)."""
    dev = device_for(backend)
    n, v = 6, 3001
    x = make_logits(kind, n, v, dtype, dev)
    t = make_targets(n, v, dev, ignore=[4])
    gen = torch.Generator().manual_seed(7)
    g_lp, g_h = (torch.randn(n, dtype=torch.float64, generator=gen) for _ in range(2))
    ours = loss_and_grad(logprob_entropy, x, t, g_lp, g_h, backend=backend)
    theirs = loss_and_grad(torch_eager_logprob_entropy, x.cpu(), t.cpu(), g_lp, g_h)
    exact = loss_and_grad(logprob_entropy_reference, x.cpu().double(), t.cpu(), g_lp, g_h)
    assert ours[2].dtype == dtype
    for mine, torch_own, ref in zip(ours, theirs, exact):
        err_ours = (mine.cpu().double() - ref).norm().item()
        err_torch = (torch_own.double() - ref).norm().item()
        assert err_ours <= 2 * err_torch, (err_ours, err_torch)


@pytest.mark.parametrize("backend", KERNELS)
def test_large_vocabulary_151936(backend):
    dev = device_for(backend)
    n, v = 2, 151936
    x = make_logits("peaked", n, v, device=dev)
    t = make_targets(n, v, dev)
    g = torch.ones(n, dtype=torch.float64)
    lp, ent, grad = loss_and_grad(logprob_entropy, x, t, g, g, backend=backend)
    r_lp, r_ent, r_grad = loss_and_grad(logprob_entropy_reference, x.cpu().double(), t.cpu(), g, g)
    torch.testing.assert_close(lp.cpu().double(), r_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.cpu().double(), r_ent, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad.cpu().double(), r_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", KERNELS)
def test_ignored_rows_give_zero_and_no_gradient(backend):
    dev = device_for(backend)
    x = make_logits("randn", 5, 50, device=dev).requires_grad_()
    t = make_targets(5, 50, dev)
    t[[0, 3]] = -1
    lp, ent = logprob_entropy(x, t, ignore_index=-1, backend=backend)
    (lp.sum() + ent.sum()).backward()
    assert (lp[[0, 3]] == 0).all() and (ent[[0, 3]] == 0).all()
    assert (x.grad[[0, 3]] == 0).all() and (x.grad[[1, 2, 4]] != 0).any()


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_gradient_reuses_the_logits_buffer(backend, dtype):
    dev = device_for(backend)
    x = make_logits("randn", 3, 300, dtype, dev)
    t = make_targets(3, 300, dev)
    _, _, expected = loss_and_grad(logprob_entropy, x, t, torch.ones(3), torch.ones(3), backend=backend)
    leaf = x.clone().requires_grad_()
    logits = leaf * 1  # a non-leaf buffer, as logits from an LM head are
    lp, ent = logprob_entropy(logits, t, backend=backend, inplace_grad=True)
    (lp.sum() + ent.sum()).backward()
    torch.testing.assert_close(logits.detach(), expected, rtol=0, atol=0)  # the buffer now holds the gradient
    torch.testing.assert_close(leaf.grad, expected, rtol=0, atol=0)


def test_only_one_output_used():
    x = make_logits("randn", 3, 40).requires_grad_()
    t = make_targets(3, 40)
    lp, _ = logprob_entropy(x, t, backend="numba")
    lp.sum().backward()
    y = x.detach().double().requires_grad_()
    logprob_entropy_reference(y, t)[0].sum().backward()
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda x, t: logprob_entropy(x[0], t), ValueError, r"logits must be 2-D, got shape \(10,\)"),
        (lambda x, t: logprob_entropy(x.long(), t), TypeError, r"logits must be float16, bfloat16, float32"),
        (lambda x, t: logprob_entropy(x, t[:3]), ValueError, r"targets must have shape \[4\]"),
        (lambda x, t: logprob_entropy(x, t.float()), TypeError, r"targets must be int64 or int32"),
        (lambda x, t: logprob_entropy(x, t.to("meta")), ValueError, r"targets are on meta but the logits on cpu"),
        (lambda x, t: logprob_entropy(x, torch.tensor([0, 10, 1, 2])), ValueError,
         r"targets\[1\] = 10 is outside \[0, 10\) and is not ignore_index \(-100\)"),
        (lambda x, t: logprob_entropy(x, torch.tensor([0, -5, 1, 2])), ValueError, r"targets\[1\] = -5"),
        (lambda x, t: logprob_entropy(x, t, temperature=0.0), ValueError, r"temperature must be a finite number >= 1e-30"),
        (lambda x, t: logprob_entropy(x, t, temperature=float("nan")), ValueError, r"temperature"),
        (lambda x, t: logprob_entropy(x, t, backend="cuda"), ValueError, r"unknown backend 'cuda'"),
        (lambda x, t: logprob_entropy(x.to("meta"), t.to("meta"), backend="numba"), ValueError,
         r"the numba backend runs on CPU tensors"),
        (lambda x, t: logprob_entropy(x[:, :0], torch.tensor([-100] * 4)), ValueError, r"empty vocabulary"),
    ],
)
def test_bad_inputs_are_clear_errors(call, exc, message):
    x, t = make_logits("randn", 4, 10), make_targets(4, 10)
    with pytest.raises(exc, match=message):
        call(x, t)


def test_empty_batch():
    lp, ent = logprob_entropy(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long), backend="numba")
    assert lp.shape == ent.shape == (0,)


@pytest.mark.parametrize("backend", KERNELS)
def test_inplace_gradient_is_refused_where_it_would_corrupt(backend):
    dev = device_for(backend)
    x = make_logits("randn", 3, 50, device=dev)
    t = make_targets(3, 50, dev)
    with pytest.raises(ValueError, match=r"inplace_grad=True overwrites the logits"):
        logprob_entropy(x.clone().requires_grad_(), t, backend=backend, inplace_grad=True)
    # logits also saved by another op (here a z-loss): the overwrite is detected when that op's backward runs
    leaf = x.clone().requires_grad_()
    logits = leaf * 1
    z_loss = torch.logsumexp(logits, -1).pow(2).mean()
    lp, _ = logprob_entropy(logits, t, backend=backend, inplace_grad=True)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        (-lp.mean() + 1e-2 * z_loss).backward()
    # a second backward through the same graph is refused as well
    logits = leaf * 1
    lp, _ = logprob_entropy(logits, t, backend=backend, inplace_grad=True)
    lp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        lp.sum().backward()


@pytest.mark.parametrize("backend", KERNELS)
def test_minus_inf_logits_have_zero_probability_and_no_gradient(backend):
    """Masked vocabulary entries (-inf) contribute nothing to H and get a zero gradient, not NaN."""
    dev = device_for(backend)
    x = torch.tensor([[1.0, 2.0, float("-inf"), 0.5], [0.3, float("-inf"), float("-inf"), 2.0]], device=dev)
    t = torch.tensor([1, 3], device=dev)
    lp, ent, grad = loss_and_grad(logprob_entropy, x, t, torch.ones(2, dtype=torch.float64),
                                  torch.ones(2, dtype=torch.float64), backend=backend)
    finite = x.cpu().double().clamp_min(-1e4)  # exp(-1e4) underflows to 0 in fp64: the same distribution
    r_lp, r_ent, r_grad = loss_and_grad(logprob_entropy_reference, finite, t.cpu(), torch.ones(2, dtype=torch.float64),
                                        torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(lp.cpu().double(), r_lp, rtol=0, atol=1e-6)
    torch.testing.assert_close(ent.cpu().double(), r_ent, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad.cpu().double(), r_grad, rtol=1e-5, atol=1e-7)
    assert (grad.cpu()[torch.isinf(x.cpu())] == 0).all()


@pytest.mark.parametrize("backend", KERNELS)
def test_logits_far_above_the_first_block(backend):
    """The numba forward sums a block against the running shift without its own max and redoes it only when a
    logit lies far above (> ~69): logits 30, 80, 300 above everything before them, a row whose first blocks are
    all -inf, and a huge jump in the last, partial block all match the fp64 reference."""
    dev = device_for(backend)
    n, v = 5, 3 * 1024 + 77
    x = make_logits("randn", n, v, dtype=torch.float64)
    x[0, 1500] += 30.0
    x[1, 2100] += 80.0
    x[1, 3000] += 160.0  # a second reshift in the same row
    x[2, :2048] = float("-inf")
    x[3, 3100] = 300.0  # in the last, partial block
    x[4] -= 1000.0  # large negative logits everywhere
    x[4, 1030] = 0.0
    x = x.to(torch.float32).to(dev)
    t = torch.tensor([1500, 5, 2500, 3100, 17], device=dev)
    g = torch.ones(n, dtype=torch.float64)
    lp, ent, grad = loss_and_grad(logprob_entropy, x, t, g, g, backend=backend)
    finite = x.cpu().double().clamp_min(-1e4)
    r_lp, r_ent, r_grad = loss_and_grad(logprob_entropy_reference, finite, t.cpu(), g, g)
    torch.testing.assert_close(lp.cpu().double(), r_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.cpu().double(), r_ent, rtol=0, atol=1e-5)
    # the target at +30 has p ~ 1: its entry 1 - p carries the rounding of z - lse in fp32, one ulp of |z| ~ 32
    torch.testing.assert_close(grad.cpu().double(), r_grad, rtol=1e-5, atol=4e-6)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_gradient_buffer_above_the_huge_page_threshold(backend):
    """A gradient of >= 8 MiB comes from arpo_kernels._memory.empty_for_write (advised for huge pages): same values
    as the reference, every entry written."""
    n, v = 16, 151936  # 9.7 MB of fp32
    x = make_logits("peaked", n, v)
    t = make_targets(n, v, ignore=[3])
    g = torch.ones(n, dtype=torch.float64)
    lp, ent, grad = loss_and_grad(logprob_entropy, x, t, g, g, backend=backend)
    r_lp, r_ent, r_grad = loss_and_grad(logprob_entropy_reference, x.double(), t, g, g)
    torch.testing.assert_close(grad.double(), r_grad, rtol=1e-5, atol=1e-7)
    assert (grad[3] == 0).all() and grad.is_contiguous()


def test_empty_for_write():
    from arpo_kernels._memory import MIN_BYTES, advise_huge_pages, empty_for_write

    like = torch.empty(4, 3, dtype=torch.bfloat16).t()  # not contiguous
    out = empty_for_write(like)
    assert out.shape == like.shape and out.dtype == like.dtype and out.is_contiguous()
    assert not advise_huge_pages(torch.empty(MIN_BYTES // 4 - 1))  # small buffers are left alone
    big = empty_for_write(torch.empty(MIN_BYTES // 4 + 4096))
    big.fill_(1.5)  # advised or not, an ordinary writable tensor
    assert big.sum().item() == 1.5 * big.numel()


def _grad_of(x, t, backend="numba"):
    xx = x.detach().requires_grad_()
    lp, ent = logprob_entropy(xx, t, backend=backend)
    (lp.sum() + ent.sum()).backward()
    return xx.grad


def test_gradient_buffer_is_reused_only_when_nobody_holds_it():
    """The CPU gradient of >= 8 MiB comes from a one-slot cache (arpo_kernels._memory.gradient_buffer): a dropped
    .grad's memory is written again by the next backward; a .grad (or a view of it) still held is never
    overwritten; release_gradient_buffers() empties the slot."""
    from arpo_kernels._memory import release_gradient_buffers

    n, v = 16, 151936
    x1, x2 = make_logits("randn", n, v, seed=1), make_logits("peaked", n, v, seed=2)
    t = make_targets(n, v)
    release_gradient_buffers()
    first = _grad_of(x1, t)
    want1 = first.clone()
    second = _grad_of(x2, t)  # `first` is held: a fresh buffer
    assert second.data_ptr() != first.data_ptr() and torch.equal(first, want1)
    view = second[3]
    want2 = second.clone()
    del second
    third = _grad_of(x1, t)  # a view keeps the second buffer alive: not reused either
    assert torch.equal(view, want2[3]) and torch.equal(third, want1)
    ptr = third.data_ptr()
    del third
    fourth = _grad_of(x2, t)  # nobody holds the third buffer any more: it is written again
    assert fourth.data_ptr() == ptr and torch.equal(fourth, want2)
    del fourth
    release_gradient_buffers()
    assert torch.equal(_grad_of(x1, t), want1)


def test_gradient_buffer_with_accumulated_gradients():
    """Two backward passes into one leaf (gradient accumulation): .grad is the sum, whichever buffers were reused."""
    n, v = 16, 151936
    x = make_logits("randn", n, v, seed=3)
    t = make_targets(n, v)
    once = _grad_of(x, t).clone()
    xx = x.detach().requires_grad_()
    for _ in range(3):
        lp, ent = logprob_entropy(xx, t, backend="numba")
        (lp.sum() + ent.sum()).backward()
    torch.testing.assert_close(xx.grad, 3 * once, rtol=1e-6, atol=1e-7)
