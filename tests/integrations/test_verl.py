"""arpo_kernels.integrations.verl against verl itself (0.9.1, installed): "arpo_vanilla" is in verl's
policy-loss registry (also through verl's plugin entry point), and gives the loss, gradient and metrics of
verl's own "vanilla" loss for every loss_agg_mode, with and without global-batch normalisation and rollout
importance weights.

Tolerances: in fp64 both compute the same expression, so they agree to rounding (1e-12 relative). In fp32 our
error against verl's fp64 result must stay within 2x verl's own fp32 error, or within what rounding a few
operations per token allows: 8 fp32 ulps of the sum of the terms' magnitudes for the loss (terms of both signs
cancel, so the loss itself can be much smaller than that sum), 4 ulps of the largest element for the gradient.
"""
import os
import subprocess
import sys

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig

from arpo_kernels.integrations.verl import LOSS_NAME, VERL_AGG_MODES, agg_weights, compute_policy_loss_arpo

from .readme import snippet

GLOBAL_INFO = {"dp_size": 2, "batch_num_tokens": 700, "global_batch_size": 24, "loss_scale_factor": 48}
EPS32 = torch.finfo(torch.float32).eps


def actor_config(**global_batch_info) -> ActorConfig:
    config = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=0.2,
                         clip_ratio_high=0.28, clip_ratio_c=2.5)
    config.global_batch_info.update(global_batch_info)
    return config


def batch(dtype: torch.dtype, rows: int = 12, length: int = 64, seed: int = 0) -> dict:
    """[rows, length] tensors: log-ratios of std 0.6 (tokens clipped on both sides and past clip_ratio_c),
    one advantage per sequence, ragged response lengths with one empty row, importance weights in [0, 2)."""
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(rows, length, generator=g, dtype=torch.float64) * 4
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    lengths[3] = 0
    x = {"log_prob": lp, "old_log_prob": lp + torch.randn(rows, length, generator=g, dtype=torch.float64) * 0.6,
         "advantages": torch.randn(rows, 1, generator=g, dtype=torch.float64).expand(rows, length).contiguous(),
         "rollout_is_weights": torch.rand(rows, length, generator=g, dtype=torch.float64) * 2}
    x = {k: v.to(dtype) for k, v in x.items()}
    x["response_mask"] = torch.arange(length) < lengths[:, None]
    return x


def run(name: str, x: dict, mode: str, config: ActorConfig, is_weights: bool):
    """(loss, d loss / d log_prob, metrics) of the registered policy loss `name`, as verl calls it."""
    log_prob = x["log_prob"].clone().requires_grad_()
    loss, metrics = get_policy_loss_fn(name)(
        old_log_prob=x["old_log_prob"], log_prob=log_prob, advantages=x["advantages"],
        response_mask=x["response_mask"], loss_agg_mode=mode, config=config,
        rollout_is_weights=x["rollout_is_weights"] if is_weights else None)
    loss.backward()
    return loss.detach().double(), log_prob.grad.double(), metrics


def magnitude(x: dict, mode: str, config: ActorConfig, is_weights: bool) -> float:
    """An upper bound of Σ_t w_t·|loss_t|: |loss_t| <= |A|·max(r, 1 + clip_ratio_high)·is_weight."""
    ratio = torch.exp(x["log_prob"] - x["old_log_prob"]).clamp_min(1 + config.clip_ratio_high)
    per_token = x["advantages"].abs() * ratio * (x["rollout_is_weights"] if is_weights else 1.0)
    w = agg_weights(x["response_mask"], mode, **config.global_batch_info, dtype=torch.float64)
    return float((w * per_token).sum())


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_registered_in_verls_registry():
    assert get_policy_loss_fn(LOSS_NAME) is compute_policy_loss_arpo


@pytest.mark.parametrize("is_weights", [False, True], ids=["plain", "rollout_is_weights"])
@pytest.mark.parametrize("global_info", [{}, GLOBAL_INFO], ids=["local", "global"])
@pytest.mark.parametrize("mode", VERL_AGG_MODES)
def test_same_loss_gradient_and_metrics_as_vanilla(mode, global_info, is_weights):
    config = actor_config(**global_info)
    x64, x32 = batch(torch.float64), batch(torch.float32)
    ref_loss, ref_grad, ref_metrics = run("vanilla", x64, mode, config, is_weights)
    assert ref_metrics["actor/pg_clipfrac"] > 0.1 and ref_metrics["actor/pg_clipfrac_lower"] > 0.01  # exercised
    loss, grad, metrics = run(LOSS_NAME, x64, mode, config, is_weights)
    assert err(loss, ref_loss) <= 1e-12 * abs(ref_loss) and err(grad, ref_grad) <= 1e-12 * ref_grad.abs().max()
    for key, value in ref_metrics.items():  # verl takes the clip fractions' means in fp32
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    verl_loss, verl_grad, _ = run("vanilla", x32, mode, config, is_weights)
    loss32, grad32, _ = run(LOSS_NAME, x32, mode, config, is_weights)
    assert err(loss32, ref_loss) <= max(2 * err(verl_loss, ref_loss), 8 * EPS32 * magnitude(x64, mode, config,
                                                                                          is_weights))
    assert err(grad32, ref_grad) <= max(2 * err(verl_grad, ref_grad), 4 * EPS32 * float(ref_grad.abs().max()))


def test_weights_follow_verls_aggregation():
    """agg_weights reproduces verl's agg_loss on an arbitrary loss matrix (the hand-made cases above aside)."""
    from verl.trainer.ppo.core_algos import agg_loss
    x = batch(torch.float64)
    loss_mat = torch.randn(x["log_prob"].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for mode in VERL_AGG_MODES:
        for info in ({}, GLOBAL_INFO):
            expected = agg_loss(loss_mat, x["response_mask"], mode, **info)
            got = (agg_weights(x["response_mask"], mode, **info, dtype=torch.float64) * loss_mat).sum()
            assert float(got) == pytest.approx(float(expected), rel=1e-12), (mode, info)


def test_no_response_token_gives_zero_where_verl_gives_nan():
    x = batch(torch.float64)
    x["response_mask"][:] = False
    verl_loss, _, _ = run("vanilla", x, "token-mean", actor_config(), False)
    loss, grad, metrics = run(LOSS_NAME, x, "token-mean", actor_config(), False)
    assert torch.isnan(verl_loss) and float(loss) == 0.0 and not grad.any()
    assert metrics == {"actor/pg_clipfrac": 0.0, "actor/ppo_kl": 0.0, "actor/pg_clipfrac_lower": 0.0}


@pytest.mark.parametrize("change, message", [
    (dict(loss_agg_mode="seq-mean"), "unknown loss_agg_mode 'seq-mean'"),
    (dict(config=None), "needs verl's actor config"),
    (dict(advantages=torch.zeros(12, 1, dtype=torch.float64)),
     r"advantages must be a tensor of shape \(12, 64\)"),
    (dict(log_prob=torch.zeros(768, dtype=torch.float64)), "log_prob must be a 2-D"),
    (dict(rollout_is_weights=-torch.ones(12, 64, dtype=torch.float64)), "rollout_is_weights must be >= 0"),
    (dict(config=actor_config().__class__(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1,
                                          clip_ratio_c=1.0)), "dual_clip must be None or a finite number > 1"),
])
def test_errors_name_the_problem(change, message):
    x = batch(torch.float64)
    kwargs = dict(old_log_prob=x["old_log_prob"], log_prob=x["log_prob"], advantages=x["advantages"],
                  response_mask=x["response_mask"], loss_agg_mode="token-mean", config=actor_config())
    with pytest.raises(ValueError, match=message):
        compute_policy_loss_arpo(**{**kwargs, **change})


def test_importing_verl_registers_it_through_the_plugin_entry_point(tmp_path):
    """`import verl` loads the verl.plugins entry point (pyproject.toml); without plugins, verl's
    VERL_USE_EXTERNAL_MODULES does it. Three fresh interpreters, run side by side (importing verl takes ~5 s),
    outside the checkout: there a stale arpo_engine.egg-info (from an older editable build) would shadow the
    installed entry points."""
    code = ("import sys, verl.trainer.ppo.core_algos as c; "
            f"print({LOSS_NAME!r} in c.POLICY_LOSS_REGISTRY, 'arpo_kernels.integrations.verl' in sys.modules)")
    envs = {"default": {}, "no plugins": {"VERL_USE_EXTERNAL_PLUGINS": "none"},
            "external module": {"VERL_USE_EXTERNAL_PLUGINS": "none",
                                "VERL_USE_EXTERNAL_MODULES": "arpo_kernels.integrations.verl"}}
    procs = {name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, cwd=tmp_path)
             for name, env in envs.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        out[name] = stdout.split()
    assert out == {"default": ["True", "True"], "no plugins": ["False", "False"],
                   "external module": ["True", "True"]}


def test_readme_snippet_runs():
    x = batch(torch.float32)
    namespace = {"log_prob": x["log_prob"].clone().requires_grad_(), "old_log_prob": x["old_log_prob"],
                 "advantages": x["advantages"], "response_mask": x["response_mask"]}
    exec(snippet("# verl"), namespace)
    ref, _, _ = run("vanilla", x, "seq-mean-token-mean", namespace["config"], False)
    assert float(namespace["pg_loss"].detach()) == pytest.approx(float(ref), rel=1e-5)
    assert namespace["log_prob"].grad is not None
