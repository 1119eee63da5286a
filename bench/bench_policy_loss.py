"""Fused policy loss vs the torch eager chain, and tree-packed vs flat, side by side in one run.

CPU: N = 1M tokens, forward + backward, with dual clip, low-variance KL and an entropy bonus: torch eager
(the verl-style reference through autograd) vs the vectorised torch backend vs numba. Packed vs flat: the same
synthetic ARPO trees (sharing ratio >= 2) through policy_loss on the flat batch and policy_loss_packed on the
packed batch (numba). GPU (CUDA only, scripts/gpu_check.sh): triton vs torch eager at N = 1M.

Beside verl (the installed package; `make bench` runs in .venv-peers): verl's own vanilla policy loss
(``get_policy_loss_fn("vanilla")`` from verl.trainer.ppo.core_algos, as verl's actor calls it, on [256, 4096])
vs ours on the same tokens and the same terms (clip 0.2 / 0.28, dual clip 3, token-mean; verl adds KL and
entropy outside this function), each row with its max abs error of the loss and of d loss / d logprobs against
the fp64 reference. verl is timed eager only: verl does not compile its policy loss, and the function's
``.item()`` metrics would break a compiled graph. Without verl the row says "not installed: verl".
ARPO_BENCH_SMALL=1 shrinks the shapes.
"""
import os
import platform

import numpy as np
import pytest
import torch

from arpo.algos.advantages import get_estimator
from arpo.tree import TrajectoryTree, flatten_trees, pack_trees
from arpo.tree.synthetic import build_tree, rollout_script
from arpo_kernels import policy_loss, policy_loss_packed, policy_loss_reference
from peer_rows import import_peer, unavailable

SMALL = os.environ.get("ARPO_BENCH_SMALL") == "1"
N = 1 << (14 if SMALL else 20)
CUDA = torch.cuda.is_available()
OPTS = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.05, kl_type="low_var_kl", entropy_coef=0.01)
BYTES_PER_TOKEN = 5 * 4 + 1 + 2 * 4  # read lp, old, adv, ref, entropy (fp32) + mask; write two gradients
VERL_OPTS = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0)  # verl's vanilla loss: ActorConfig below
VERL_BYTES_PER_TOKEN = 3 * 4 + 1 + 4  # read lp, old, adv + mask; write one gradient
CORE_ALGOS, VERL_STATUS = import_peer("verl.trainer.ppo.core_algos", "verl")


def inputs(n, device):
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(n, generator=g) * 3
    t = dict(old=lp + torch.randn(n, generator=g) * 0.2, adv=torch.randn(n, generator=g),
             mask=torch.rand(n, generator=g) > 0.2, ref=lp + torch.randn(n, generator=g) * 0.2,
             ent=torch.rand(n, generator=g) * 3)
    return lp.to(device), {k: v.to(device) for k, v in t.items()}


def flat_step(provider, lp, t, sync):
    def run():
        x, e = lp.detach().requires_grad_(), t["ent"].detach().requires_grad_()
        if provider == "torch-eager":
            loss = policy_loss_reference(x, t["old"], t["adv"], t["mask"], ref_logprobs=t["ref"], entropy=e, **OPTS)
        else:
            loss, _ = policy_loss(x, t["old"], t["adv"], t["mask"], ref_logprobs=t["ref"], entropy=e,
                                  backend=provider, **OPTS)
        loss.backward()
        if sync:
            torch.cuda.synchronize()
    return run


def info(benchmark, tokens):
    benchmark.extra_info.update({
        "tokens": tokens, "GB_per_s": round(tokens * BYTES_PER_TOKEN / benchmark.stats.stats.mean / 1e9, 2),
        "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if CUDA else (platform.processor() or platform.machine()),
    })


GPU = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run scripts/gpu_check.sh on a GPU machine)")


@pytest.mark.parametrize("device, provider", [("cpu", "torch-eager"), ("cpu", "torch"), ("cpu", "numba"),
                                              pytest.param("cuda", "torch-eager", marks=GPU, id="gpu-torch-eager"),
                                              pytest.param("cuda", "triton", marks=GPU, id="gpu-triton")])
def test_policy_loss(benchmark, device, provider):
    """Forward + backward through the loss on one device; the GPU runs sync inside the timed call."""
    benchmark.group = f"{device} policy_loss fwd+bwd N={N} fp32"
    lp, t = inputs(N, device)
    run = flat_step(provider, lp, t, device == "cuda")
    run()
    benchmark.pedantic(run, rounds=20 if device == "cuda" else 5, warmup_rounds=1)
    info(benchmark, N)


@pytest.fixture(scope="module")
def trees():
    rng = np.random.default_rng(0)
    prompts = 8 if SMALL else 64
    # 16 leaves (8 initial paths), 4 tool turns, 128-token segments, 512-token prompts: sharing ratio ~2.06
    return [build_tree(TrajectoryTree, rollout_script(rng, 16, 8, 4, 128, prompt_tokens=512)) for _ in range(prompts)]


@pytest.mark.parametrize("layout", ["flat", "packed"])
def test_packed_vs_flat(benchmark, trees, layout):
    benchmark.group = "policy_loss on ARPO trees, flat rows vs tree-packed (numba, fwd+bwd)"
    adv = get_estimator("grpo")([t.leaf_rewards() for t in trees], eps=1e-6)
    f, p = flatten_trees(trees, adv), pack_trees(trees, adv)
    g = torch.Generator().manual_seed(1)
    if layout == "flat":
        mask = torch.from_numpy(f.loss_mask).reshape(-1)
        adv = torch.from_numpy(f.advantages).reshape(-1)
        n = mask.numel()
    else:
        n = p.num_tokens
        arrays = {k: torch.from_numpy(getattr(p, k)) for k in ("adv_pos", "adv_neg", "loss_weight")}
    lp = -torch.rand(n, generator=g) * 3
    old = lp + torch.randn(n, generator=g) * 0.2

    def run():
        x = lp.detach().requires_grad_()
        if layout == "flat":
            loss, _ = policy_loss(x, old, adv, mask, clip_high=0.28, backend="numba")
        else:
            loss, _ = policy_loss_packed(x, old, arrays["adv_pos"], arrays["adv_neg"], arrays["loss_weight"],
                                         clip_high=0.28, backend="numba")
        loss.backward()

    run()
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    unique, flat_tokens = p.num_tokens, sum(t.num_tokens(False) for t in trees)
    info(benchmark, n)
    benchmark.extra_info.update({"unique_tokens": unique, "flat_tokens": flat_tokens,
                                 "sharing_ratio": round(flat_tokens / unique, 2), "padded_flat_tokens": f.input_ids.size})


# ---- beside verl's vanilla policy loss ------------------------------------------------------------------------
def verl_vanilla():
    """verl's registered "vanilla" loss with our VERL_OPTS as verl's ActorConfig."""
    from verl.workers.config import ActorConfig

    config = ActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=8, clip_ratio=0.2,
                         clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    fn = CORE_ALGOS.get_policy_loss_fn("vanilla")
    return lambda x, old, adv, mask: fn(old_log_prob=old, log_prob=x, advantages=adv, response_mask=mask,
                                        loss_agg_mode="token-mean", config=config)[0]


def ours(backend):
    if backend == "torch-eager":
        return lambda x, old, adv, mask: policy_loss_reference(x, old, adv, mask, **VERL_OPTS)
    return lambda x, old, adv, mask: policy_loss(x, old, adv, mask, backend=backend, **VERL_OPTS)[0]


def loss_errors(fn, lp, t) -> dict:
    """Max abs error of the loss and of d loss / d logprobs against policy_loss_reference in fp64."""
    x = lp.detach().requires_grad_()
    loss = fn(x, t["old"], t["adv"], t["mask"])
    loss.backward()
    x64 = lp.detach().double().requires_grad_()
    ref = policy_loss_reference(x64, t["old"].double(), t["adv"].double(), t["mask"], **VERL_OPTS)
    ref.backward()
    return {"err_loss": float(f"{abs(loss.item() - ref.item()):.2e}"),
            "err_grad": float(f"{float((x.grad.double() - x64.grad).abs().max()):.2e}")}


@pytest.mark.parametrize("provider", ["verl-eager", "torch-eager", "torch", "numba"])
def test_policy_loss_vs_verl(benchmark, provider):
    """Forward + backward of verl's vanilla terms on [B, L] = [256, 4096] tokens (flat N for ours)."""
    benchmark.group = f"cpu policy_loss fwd+bwd N={N} fp32, verl vanilla terms (dual clip, token-mean)"
    if provider.startswith("verl") and CORE_ALGOS is None:
        return unavailable(benchmark, VERL_STATUS)
    lp, t = inputs(N, "cpu")
    t = {k: v.reshape(256, -1) for k, v in t.items()} if provider.startswith("verl") else t
    lp = lp.reshape(256, -1) if provider.startswith("verl") else lp
    fn = verl_vanilla() if provider.startswith("verl") else ours(provider)
    errors = loss_errors(fn, lp, t)  # also the warm-up

    def run():
        x = lp.detach().requires_grad_()
        fn(x, t["old"], t["adv"], t["mask"]).backward()

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    info(benchmark, N)
    benchmark.extra_info.update({"GB_per_s": round(N * VERL_BYTES_PER_TOKEN / benchmark.stats.stats.mean / 1e9, 2),
                                 **errors, **({"verl": import_peer("verl", "verl")[0].__version__}
                                              if provider.startswith("verl") else {})})
