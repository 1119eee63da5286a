"""Fused log-prob + entropy vs the torch chain and the peers, side by side in one run (pytest-benchmark).

CPU (always): numba vs torch eager (log_softmax + gather + entropy, fp32) vs verl, N=2048, V in {32768, 151936},
forward and forward+backward. GPU (when CUDA is present; scripts/gpu_check.sh): triton vs torch eager vs
torch.compile vs verl at N=16384, V=151936, bf16; and the fused-linear path (H=3584) vs hidden @ W.T + triton
vs Liger-Kernel's fused linear cross-entropy (log-probs only: Liger has no entropy output).

The peers are the installed packages (`make bench` runs in .venv-peers): verl's own torch functions
`verl.utils.torch_functional.logprobs_from_logits` + `entropy_from_logits`, as verl's FSDP engine calls them:
`verl-eager` both eager; `verl-compile` with entropy_from_logits under torch.compile(dynamic=True), which is
what verl does with use_torch_compile (its default) -- verl never compiles logprobs_from_logits (on CPU it is a
Python loop over the N rows that torch.compile would unroll). A peer that is not importable, or Liger on a
machine without CUDA, gives a row that says so (bench/peer_rows.py), not a skip.

extra_info: GB/s (bytes the op must touch / time), TFLOP/s for the linear path, peak extra memory, max abs error
of logprobs / entropy / gradient against the fp64 reference (arpo_kernels.reference), versions. On CPU also the
machine's copy bandwidth measured in the same run (rows test_cpu_copy: a logits-sized dst.copy_(src) into a
mapped, a fresh and a fresh huge-page destination) and each row's time as a multiple of the floor it implies
(x_floor; x_floor_fresh charges the gradient's write at the fresh-destination rate). The numba rows' timed rounds
write their gradient into the buffer the previous round dropped (arpo_kernels._memory.gradient_buffer: a training
loop's steady state); the warm-up round pays for a fresh one, and peak_extra_MB is measured from an empty slot.
ARPO_BENCH_SMALL=1 shrinks every shape (a smoke run of this file on CPU).
"""
import os
import platform
import threading
import time

import numba
import pytest
import torch

from arpo_kernels import linear_logprob_entropy, logprob_entropy, release_gradient_buffers
from arpo_kernels.reference import logprob_entropy_reference
from peer_rows import import_peer, logprob_entropy_errors, unavailable

SMALL = os.environ.get("ARPO_BENCH_SMALL") == "1"
CUDA = torch.cuda.is_available()
CPU_N = 64 if SMALL else 2048
CPU_VOCABS = [1000, 4099] if SMALL else [32768, 151936]
GPU_N, GPU_V, GPU_H = (256, 4099, 64) if SMALL else (16384, 151936, 3584)
VERL_F, VERL_STATUS = import_peer("verl.utils.torch_functional", "verl")


def versions() -> dict:
    import triton

    verl = {} if VERL_F is None else {"verl": import_peer("verl", "verl")[0].__version__}
    return {**verl, "torch": torch.__version__, "numba": numba.__version__, "triton": triton.__version__,
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


def verl_eager(x, t):
    return VERL_F.logprobs_from_logits(x, t), VERL_F.entropy_from_logits(x)


def verl_compiled(x, t):
    """As verl's FSDP engine with use_torch_compile: only entropy_from_logits is compiled."""
    if "verl" not in _compiled:
        _compiled["verl"] = torch.compile(VERL_F.entropy_from_logits, dynamic=True)
    return VERL_F.logprobs_from_logits(x, t), _compiled["verl"](x)


PROVIDERS = {"torch-eager": eager, "torch-compile": compiled, "torch": fused("torch"), "numba": fused("numba"),
             "triton": fused("triton"),
             "verl-eager": verl_eager, "verl-compile": verl_compiled}


def step(provider, x, t, backward: bool, sync: bool):
    """One timed call: forward, or forward + backward of sum(logprobs) + sum(entropy). run(keep=True) returns
    (logprobs, entropy, grad or None) for the agreement check; the timed calls keep nothing."""
    def run(keep=False):
        if backward:
            xx = x.detach().requires_grad_()
            lp, ent = provider(xx, t)
            (lp.sum() + ent.sum()).backward()
        else:
            with torch.no_grad():
                lp, ent = provider(x, t)
        if sync:
            torch.cuda.synchronize()
        return (lp.detach(), ent.detach(), xx.grad if backward else None) if keep else None
    return run


def record(benchmark, run, x, t, elem, backward, peak_fn):
    lp, ent, grad = run(keep=True)  # warm-up (compiles numba/triton/torch.compile), checked against fp64
    errors = logprob_entropy_errors(x, t, lp, ent, grad)
    del lp, ent, grad
    n, v = x.shape
    benchmark.pedantic(run, rounds=3 if not CUDA else 10, warmup_rounds=1)
    moved = n * v * elem * (3 if backward else 1)  # read logits (twice with backward), write the gradient
    benchmark.extra_info.update(versions())
    release_gradient_buffers()  # the peak counts the gradient buffer numba keeps between calls (see _memory.py)
    benchmark.extra_info.update({
        "N": n, "V": v, "GB_per_s": round(moved / benchmark.stats.stats.mean / 1e9, 2),
        "peak_extra_MB": round(peak_fn(run) / 2**20, 1), **errors,
    })
    if not x.is_cuda:
        benchmark.extra_info.update(floor_info(x, backward, benchmark.stats.stats.mean))


# ---- the memory-bandwidth floor (CPU) -------------------------------------------------------------------------
def _copy_times(x: torch.Tensor) -> dict:
    """Seconds of dst.copy_(x) for a logits-sized buffer, best of 3: into a destination already mapped
    ("prefaulted"), into a fresh torch.empty_like ("fresh": every page faulted in by the copy) and into a fresh
    buffer advised for huge pages before its first touch ("fresh_huge", what the numba backward writes into)."""
    from arpo_kernels._memory import empty_for_write

    dst = torch.empty_like(x)
    dst.copy_(x)

    def best(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    return {"prefaulted": best(lambda: dst.copy_(x)), "fresh": best(lambda: torch.empty_like(x).copy_(x)),
            "fresh_huge": best(lambda: empty_for_write(x).copy_(x))}


_COPY = {}


def copy_times(x: torch.Tensor) -> dict:
    """_copy_times of x's shape and dtype, measured once per run (the first row of a shape measures it)."""
    key = (tuple(x.shape), x.dtype)
    if key not in _COPY:
        _COPY[key] = _copy_times(x)
    return _COPY[key]


def floor_info(x: torch.Tensor, backward: bool, seconds: float) -> dict:
    """The op's time against the machine's measured copy bandwidth: copy_GB_per_s counts a copy's read and write
    (2 bytes moved per byte copied); floor_ms = the bytes the op must move (the logits read once, or twice plus
    the gradient written) at that bandwidth; x_floor = time / floor. With backward, floor_fresh_ms charges the
    gradient's write at the fresh-destination copy (page faults included), x_floor_fresh against it."""
    c = copy_times(x)
    info = {"copy_GB_per_s": round(2 * x.numel() * x.element_size() / c["prefaulted"] / 1e9, 2)}
    floor = c["prefaulted"] * (1.5 if backward else 0.5)
    info.update(floor_ms=round(floor * 1e3, 1), x_floor=round(seconds / floor, 2))
    if backward:
        fresh = 0.5 * c["prefaulted"] + c["fresh"]  # read the logits in the forward; copy them into fresh memory
        info.update(floor_fresh_ms=round(fresh * 1e3, 1), x_floor_fresh=round(seconds / fresh, 2))
    return info


def peer_missing(provider):
    """Why a peer's row cannot run here (None for our providers and an importable peer)."""
    return VERL_STATUS if provider.startswith("verl") else None


# ---- CPU ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("vocab", CPU_VOCABS)
@pytest.mark.parametrize("kind", ["prefaulted", "fresh", "fresh_huge"])
def test_cpu_copy(benchmark, kind, vocab, backward):
    """The bandwidth floor as rows of each group: dst.copy_(logits) of the logits' size, into a mapped destination,
    a fresh one, and a fresh one advised for huge pages (GB_per_s counts read + write)."""
    benchmark.group = f"cpu logprob_entropy N={CPU_N} V={vocab} fp32 {'fwd+bwd' if backward else 'fwd'}"
    x = torch.randn(CPU_N, vocab, generator=torch.Generator().manual_seed(vocab)) * 2
    if kind == "prefaulted":
        dst = torch.empty_like(x)
        dst.copy_(x)
        run = lambda: dst.copy_(x)  # noqa: E731
    else:
        from arpo_kernels._memory import empty_for_write

        alloc = torch.empty_like if kind == "fresh" else empty_for_write
        run = lambda: alloc(x).copy_(x)  # noqa: E731
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update({"N": CPU_N, "V": vocab, "threads": torch.get_num_threads(),
                                 "GB_per_s": round(2 * x.numel() * 4 / benchmark.stats.stats.mean / 1e9, 2)})


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("vocab", CPU_VOCABS)
@pytest.mark.parametrize("provider", ["torch-eager", "torch", "numba", "verl-eager", "verl-compile"])
def test_cpu(benchmark, provider, vocab, backward):
    benchmark.group = f"cpu logprob_entropy N={CPU_N} V={vocab} fp32 {'fwd+bwd' if backward else 'fwd'}"
    if peer_missing(provider):
        return unavailable(benchmark, peer_missing(provider))
    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(CPU_N, vocab, generator=g) * 2
    t = torch.randint(0, vocab, (CPU_N,), generator=g)
    record(benchmark, step(PROVIDERS[provider], x, t, backward, False), x, t, 4, backward, cpu_peak_extra_bytes)


# ---- GPU ----------------------------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run scripts/gpu_check.sh on a GPU machine)")


@gpu
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("provider", ["torch-eager", "torch-compile", "triton", "verl-eager", "verl-compile"])
def test_gpu(benchmark, provider, backward):
    benchmark.group = f"gpu logprob_entropy N={GPU_N} V={GPU_V} bf16 {'fwd+bwd' if backward else 'fwd'}"
    if peer_missing(provider):
        return unavailable(benchmark, peer_missing(provider))
    x = (torch.randn(GPU_N, GPU_V, device="cuda") * 2).bfloat16()
    t = torch.randint(0, GPU_V, (GPU_N,), device="cuda")
    record(benchmark, step(PROVIDERS[provider], x, t, backward, True), x, t, 2, backward, gpu_peak_extra_bytes)


def liger_linear_logprobs():
    """Liger-Kernel's fused linear cross-entropy, per token (reduction="none"): (hidden, weight, targets) ->
    logprobs = -CE, or a status saying why it cannot run here."""
    if not CUDA:
        return None, "needs CUDA"
    mod, status = import_peer("liger_kernel.transformers.fused_linear_cross_entropy", "liger-kernel")
    if mod is None:
        return None, status
    ce = mod.LigerFusedLinearCrossEntropyLoss(reduction="none")

    def fn(hidden, weight, t):
        out = ce(weight, hidden, t)
        return -(out[0] if isinstance(out, tuple) else out)
    return fn, None


@pytest.mark.parametrize("provider", [pytest.param("logits+triton", marks=gpu), pytest.param("fused-linear", marks=gpu),
                                      "liger-fused-linear-ce"])
def test_gpu_linear(benchmark, provider):
    """Forward + backward from hidden states: 8·N·H·V flops (forward GEMM, recomputed GEMM, two grad GEMMs).
    Liger's row (log-probs only, loss = Σ logprobs) runs only on CUDA; elsewhere it says "needs CUDA"."""
    benchmark.group = f"gpu linear_logprob_entropy N={GPU_N} H={GPU_H} V={GPU_V} bf16 fwd+bwd"
    liger, status = liger_linear_logprobs() if provider.startswith("liger") else (None, None)
    if status:
        return unavailable(benchmark, status)
    hidden = (torch.randn(GPU_N, GPU_H, device="cuda") * 0.5).bfloat16().requires_grad_()
    weight = (torch.randn(GPU_V, GPU_H, device="cuda") / GPU_H**0.5).bfloat16().requires_grad_()
    t = torch.randint(0, GPU_V, (GPU_N,), device="cuda")

    def run(keep=False):
        hidden.grad = weight.grad = None
        if liger is not None:
            lp, ent = liger(hidden, weight, t), None
            lp.sum().backward()
        else:
            if provider == "fused-linear":
                lp, ent = linear_logprob_entropy(hidden, weight, t, backend="triton")
            else:
                lp, ent = logprob_entropy(hidden @ weight.T, t, backend="triton", inplace_grad=True)
            (lp.sum() + ent.sum()).backward()
        torch.cuda.synchronize()
        return (lp.detach(), None if ent is None else ent.detach()) if keep else None

    lp, ent = run(keep=True)
    errors = logprob_entropy_errors(hidden, t, lp, ent, weight=weight)
    del lp, ent
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    flops = 8 * GPU_N * GPU_H * GPU_V if provider == "fused-linear" else 6 * GPU_N * GPU_H * GPU_V
    benchmark.extra_info.update(versions())
    benchmark.extra_info.update({
        "TFLOP_per_s": round(flops / benchmark.stats.stats.mean / 1e12, 1),
        "peak_extra_MB": round(gpu_peak_extra_bytes(run) / 2**20, 1), **errors,
    })
