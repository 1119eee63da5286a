"""Fused log-prob + entropy vs the torch chain, side by side in one run (pytest-benchmark).

CPU (always): numba vs torch eager (log_softmax + gather + entropy, fp32), N=2048, V in {32768, 151936},
forward and forward+backward. GPU (when CUDA is present; scripts/gpu_check.sh): triton vs torch eager vs
torch.compile at N=16384, V=151936, bf16; and the fused-linear path (H=3584) vs hidden @ W.T + triton.
extra_info: GB/s (bytes the op must touch / time), TFLOP/s for the linear path, peak extra memory, versions.
ARPO_BENCH_SMALL=1 shrinks every shape (a smoke run of this file on CPU).
"""
import os
import platform
import threading
import time

import numba
import pytest
import torch

from arpo_kernels import linear_logprob_entropy, logprob_entropy
from arpo_kernels.reference import logprob_entropy_reference

SMALL = os.environ.get("ARPO_BENCH_SMALL") == "1"
CUDA = torch.cuda.is_available()
CPU_N = 64 if SMALL else 2048
CPU_VOCABS = [1000, 4099] if SMALL else [32768, 151936]
GPU_N, GPU_V, GPU_H = (256, 4099, 64) if SMALL else (16384, 151936, 3584)


def versions() -> dict:
    import triton

    return {"torch": torch.__version__, "numba": numba.__version__, "triton": triton.__version__,
            "python": platform.python_version(),
            "device": torch.cuda.get_device_name(0) if CUDA else (platform.processor() or platform.machine()),
            "threads": torch.get_num_threads()}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_peak_extra_bytes(fn) -> int:
    """Peak resident memory above the level before `fn`, sampled every 0.5 ms while it runs."""
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    th = threading.Thread(target=sample)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(0, max(peak[0], _rss()) - base)


def gpu_peak_extra_bytes(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# ---- providers ----------------------------------------------------------------------------------------------
def fused(backend):
    return lambda x, t: logprob_entropy(x, t, backend=backend)


def eager(x, t):
    return logprob_entropy_reference(x, t)  # upcast to fp32, log_softmax, gather, -Σ p log p


_compiled = {}


def compiled(x, t):
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(logprob_entropy_reference)
    return _compiled["fn"](x, t)


def step(provider, x, t, backward: bool, sync: bool):
    """One timed call: forward, or forward + backward of sum(logprobs) + sum(entropy)."""
    def run():
        if backward:
            xx = x.detach().requires_grad_()
            lp, ent = provider(xx, t)
            (lp.sum() + ent.sum()).backward()
        else:
            with torch.no_grad():
                provider(x, t)
        if sync:
            torch.cuda.synchronize()
    return run


def record(benchmark, run, n, v, elem, backward, peak_fn):
    run()  # warm-up (compiles numba/triton/torch.compile)
    benchmark.pedantic(run, rounds=3 if not CUDA else 10, warmup_rounds=1)
    moved = n * v * elem * (3 if backward else 1)  # read logits (twice with backward), write the gradient
    benchmark.extra_info.update(versions())
    benchmark.extra_info.update({
        "N": n, "V": v, "GB_per_s": round(moved / benchmark.stats.stats.mean / 1e9, 2),
        "peak_extra_MB": round(peak_fn(run) / 2**20, 1),
    })


# ---- CPU ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("vocab", CPU_VOCABS)
@pytest.mark.parametrize("provider", ["torch-eager", "numba"])
def test_cpu(benchmark, provider, vocab, backward):
    benchmark.group = f"cpu logprob_entropy N={CPU_N} V={vocab} fp32 {'fwd+bwd' if backward else 'fwd'}"
    x = torch.randn(CPU_N, vocab) * 2
    t = torch.randint(0, vocab, (CPU_N,))
    fn = fused("numba") if provider == "numba" else eager
    record(benchmark, step(fn, x, t, backward, False), CPU_N, vocab, 4, backward, cpu_peak_extra_bytes)


# ---- GPU ----------------------------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run scripts/gpu_check.sh on a GPU machine)")


@gpu
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("provider", ["torch-eager", "torch-compile", "triton"])
def test_gpu(benchmark, provider, backward):
    benchmark.group = f"gpu logprob_entropy N={GPU_N} V={GPU_V} bf16 {'fwd+bwd' if backward else 'fwd'}"
    x = (torch.randn(GPU_N, GPU_V, device="cuda") * 2).bfloat16()
    t = torch.randint(0, GPU_V, (GPU_N,), device="cuda")
    fn = {"torch-eager": eager, "torch-compile": compiled, "triton": fused("triton")}[provider]
    record(benchmark, step(fn, x, t, backward, True), GPU_N, GPU_V, 2, backward, gpu_peak_extra_bytes)


@gpu
@pytest.mark.parametrize("provider", ["logits+triton", "fused-linear"])
def test_gpu_linear(benchmark, provider):
    """Forward + backward from hidden states: 8·N·H·V flops (forward GEMM, recomputed GEMM, two grad GEMMs)."""
    benchmark.group = f"gpu linear_logprob_entropy N={GPU_N} H={GPU_H} V={GPU_V} bf16 fwd+bwd"
    hidden = (torch.randn(GPU_N, GPU_H, device="cuda") * 0.5).bfloat16().requires_grad_()
    weight = (torch.randn(GPU_V, GPU_H, device="cuda") / GPU_H**0.5).bfloat16().requires_grad_()
    t = torch.randint(0, GPU_V, (GPU_N,), device="cuda")

    def run():
        hidden.grad = weight.grad = None
        if provider == "fused-linear":
            lp, ent = linear_logprob_entropy(hidden, weight, t, backend="triton")
        else:
            lp, ent = logprob_entropy(hidden @ weight.T, t, backend="triton", inplace_grad=True)
        (lp.sum() + ent.sum()).backward()
        torch.cuda.synchronize()

    run()
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    flops = 8 * GPU_N * GPU_H * GPU_V if provider == "fused-linear" else 6 * GPU_N * GPU_H * GPU_V
    benchmark.extra_info.update(versions())
    benchmark.extra_info.update({
        "TFLOP_per_s": round(flops / benchmark.stats.stats.mean / 1e12, 1),
        "peak_extra_MB": round(gpu_peak_extra_bytes(run) / 2**20, 1),
    })
