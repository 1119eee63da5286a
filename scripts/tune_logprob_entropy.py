"""Sweep (BLOCK_V, num_warps) of the Triton logprob_entropy kernels on the GPU at N=16384, V=151936, bf16 and
print each configuration's time and bandwidth (the defaults live in arpo_kernels/_triton_logprob_entropy.py).
    python scripts/tune_logprob_entropy.py
"""
import torch
import triton.testing

from arpo_kernels import _triton_logprob_entropy as K

N, V = 16384, 151936
CONFIGS = [(2048, 4), (4096, 4), (4096, 8), (8192, 4), (8192, 8), (8192, 16), (16384, 8), (16384, 16),
           (32768, 16), (32768, 32)]


def main():
    x = (torch.randn(N, V, device="cuda") * 2).bfloat16()
    t = torch.randint(0, V, (N,), device="cuda")
    lp, ent, lse, mz = K.forward(x, t, 1.0, -100)
    g, out = torch.ones(N, device="cuda"), torch.empty_like(x)
    nbytes = N * V * 2
    print(f"{torch.cuda.get_device_name(0)}  N={N} V={V} bf16, {nbytes / 1e9:.2f} GB of logits")
    for cfg in CONFIGS:
        K.FWD_CONFIG = K.BWD_CONFIG = cfg
        fwd = triton.testing.do_bench(lambda: K.forward(x, t, 1.0, -100), warmup=5, rep=30)
        bwd = triton.testing.do_bench(lambda: K.backward(x, t, g, g, lse, mz, 1.0, -100, out), warmup=5, rep=30)
        print(f"BLOCK_V={cfg[0]:6d} warps={cfg[1]:2d}  fwd {fwd:.3f} ms ({nbytes / fwd / 1e6:.0f} GB/s)  "
              f"bwd {bwd:.3f} ms ({2 * nbytes / bwd / 1e6:.0f} GB/s)")


if __name__ == "__main__":
    main()
