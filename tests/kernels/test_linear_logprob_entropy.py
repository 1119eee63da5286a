"""linear_logprob_entropy (chunked LM head) against the reference on logits = hidden @ weight.T: values,
gradients for hidden and weight, fp64 gradcheck, chunking, and errors."""
import pytest
import torch

from arpo_kernels import linear_logprob_entropy, linear_logprob_entropy_reference

from .common import device_for, make_targets, skip_triton_without_runtime

KERNELS = [pytest.param("triton", marks=skip_triton_without_runtime), "numba", "torch"]


def inputs(n, h, v, dtype, dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).to(dtype=dtype, device=dev)
    weight = (torch.randn(v, h, generator=g, dtype=torch.float64) / h**0.5 * 3).to(dtype=dtype, device=dev)
    return hidden, weight


def run(fn, hidden, weight, t, **kw):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    lp, ent = fn(hidden, weight, t, **kw)
    g = torch.arange(1, lp.shape[0] + 1, dtype=lp.dtype, device=lp.device) / lp.shape[0]
    (lp * g - 0.5 * ent * g.flip(0)).sum().backward()
    return lp.detach(), ent.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("chunk_size", [1, 3, 7, None])
@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_matches_reference_fp32(backend, chunk_size, temperature):
    dev = device_for(backend)
    hidden, weight = inputs(7, 16, 301, torch.float32, dev)
    t = make_targets(7, 301, dev, ignore=[5])
    ours = run(linear_logprob_entropy, hidden, weight, t, temperature=temperature, chunk_size=chunk_size,
               backend=backend)
    ref = run(linear_logprob_entropy_reference, hidden.double(), weight.double(), t, temperature=temperature)
    # fp32 GEMMs of length 16 and fp32 reductions over V = 301: ~1e-6 relative; the weight gradient sums
    # over up to 7 rows.
    for mine, exact in zip(ours, ref):
        torch.testing.assert_close(mine.cpu().double(), exact.cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", KERNELS)
def test_gradcheck_fp64(backend):
    dev = device_for(backend)
    hidden, weight = inputs(5, 6, 23, torch.float64, dev)
    t = make_targets(5, 23, dev, ignore=[2])
    assert torch.autograd.gradcheck(
        lambda h, w: linear_logprob_entropy(h, w, t, temperature=0.9, chunk_size=2, backend=backend),
        (hidden.requires_grad_(), weight.requires_grad_()), eps=1e-6, atol=1e-7)


def test_bf16_close_to_the_reference_in_bf16():
    hidden, weight = inputs(6, 32, 500, torch.bfloat16, "cpu")
    t = make_targets(6, 500)
    ours = run(linear_logprob_entropy, hidden, weight, t, chunk_size=4, backend="numba")
    theirs = run(linear_logprob_entropy_reference, hidden, weight, t)  # same bf16 GEMM, reference reduction
    exact = run(linear_logprob_entropy_reference, hidden.double(), weight.double(), t)
    for mine, torch_own, ref in zip(ours, theirs, exact):
        assert mine.dtype == torch_own.dtype
        assert (mine.double() - ref).norm() <= 2 * (torch_own.double() - ref).norm() + 1e-12


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda h, w, t: linear_logprob_entropy(h, w[:, :5], t), ValueError, r"weight must be \[V, 8\]"),
        (lambda h, w, t: linear_logprob_entropy(h, w.double(), t), ValueError, r"must share dtype and device"),
        (lambda h, w, t: linear_logprob_entropy(h, w, t, chunk_size=0), ValueError, r"chunk_size must be >= 1"),
        (lambda h, w, t: linear_logprob_entropy(h, w, t + 50), ValueError, r"is outside \[0, 50\)"),
        (lambda h, w, t: linear_logprob_entropy(h[0], w, t), ValueError, r"hidden must be 2-D"),
    ],
)
def test_bad_inputs(call, exc, message):
    hidden, weight = inputs(4, 8, 50, torch.float32, "cpu")
    with pytest.raises(exc, match=message):
        call(hidden, weight, make_targets(4, 50))


@pytest.mark.parametrize("frozen", ["weight", "hidden"])
def test_frozen_input_gets_no_gradient(frozen):
    hidden, weight = inputs(5, 8, 60, torch.float64, "cpu")
    t = make_targets(5, 60)
    h = hidden.clone().requires_grad_(frozen != "hidden")
    w = weight.clone().requires_grad_(frozen != "weight")
    lp, ent = linear_logprob_entropy(h, w, t, chunk_size=2)
    (lp.sum() + ent.sum()).backward()
    hr, wr = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    a, b = linear_logprob_entropy_reference(hr, wr, t)
    (a.sum() + b.sum()).backward()
    trained, expected = (h, hr.grad) if frozen == "weight" else (w, wr.grad)
    assert (w if frozen == "weight" else h).grad is None
    torch.testing.assert_close(trained.grad, expected, rtol=1e-10, atol=1e-12)  # fp64 throughout
