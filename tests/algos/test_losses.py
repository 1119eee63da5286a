"""Loss variants: the registry is the config's list of choices; GSPO against hand-computed values and a
plain per-sequence reference (value and gradient); packed GSPO is refused; one training step with GSPO."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from arpo.algos import losses
from arpo.algos.losses import LOSSES, LossInputs, get_loss, register_loss
from arpo.config import AlgoConfig, ConfigError, load_config
from arpo_kernels import flat_terms, flat_weights

from ..train.test_trainer import ROOT, tiny


def _choices(name):
    (f,) = [f for f in dataclasses.fields(AlgoConfig) if f.name == name]
    return tuple(f.metadata["choices"])


def test_config_choices_are_the_registry():
    assert _choices("loss") == tuple(LOSSES) and {"ppo_clip", "gspo"} <= set(LOSSES)


def test_a_registered_variant_becomes_a_config_choice():
    @register_loss("scaled_clip")
    def scaled_clip(x, algo):  # a one-function variant: half the clipped objective
        loss, metrics = get_loss("ppo_clip")(x, algo)
        return 0.5 * loss, metrics

    try:
        assert load_config(ROOT / "configs" / "demo.yaml", ["algo.loss=scaled_clip"]).algo.loss == "scaled_clip"
        with pytest.raises(ValueError, match="already registered"):
            register_loss("scaled_clip")
    finally:
        del LOSSES["scaled_clip"]
        losses.PACKED_EXACT.discard("scaled_clip")
    with pytest.raises(ConfigError, match="algo.loss"):
        load_config(ROOT / "configs" / "demo.yaml", ["algo.loss=scaled_clip"])


def test_packed_gspo_is_refused():
    with pytest.raises(ConfigError, match="no exact packed form"):
        load_config(ROOT / "configs" / "demo.yaml", ["algo.loss=gspo", "train.update=packed"])


def _inputs(lp, old, adv, seq, agg="seq-mean-token-mean"):
    """Flat LossInputs for 1-D tokens of sequences ``seq`` with per-token advantages ``adv``."""
    w = flat_weights(torch.ones_like(lp, dtype=torch.bool), agg, seq_index=seq)
    return LossInputs(lp, torch.zeros_like(lp), old, None, flat_terms(adv, w), seq, "torch")


def test_gspo_by_hand():
    """One sequence of two tokens, log-ratios 0.1 and 0.3: s = exp(0.2) = 1.2214, A = 1, W = 1."""
    old = torch.zeros(2, dtype=torch.float64)
    seq = torch.zeros(2, dtype=torch.int64)
    adv = torch.ones(2, dtype=torch.float64)
    s = math.exp(0.2)
    for clip_high, value, grad in ((0.3, -s, -s / 2), (0.2, -1.2, 0.0)):  # unclipped, then clipped above 1.2
        lp = torch.tensor([0.1, 0.3], dtype=torch.float64, requires_grad=True)
        loss, m = get_loss("gspo")(_inputs(lp, old, adv, seq), AlgoConfig(clip_low=0.2, clip_high=clip_high))
        loss.backward()
        assert loss.item() == pytest.approx(value, abs=1e-12)
        torch.testing.assert_close(lp.grad, torch.full((2,), grad, dtype=torch.float64), rtol=0, atol=1e-12)
        assert m["ratio_mean"].item() == pytest.approx(s) and m["clip_frac_high"].item() == (clip_high == 0.2)


def _reference(lp, old, adv_per_seq, lengths, clip_low, clip_high):
    """GSPO written per sequence: (1/G) Σ_i max(-A_i s_i, -A_i clip(s_i)), s_i = exp(mean log-ratio)."""
    total, start = 0.0, 0
    for a, n in zip(adv_per_seq, lengths):
        s = torch.exp((lp[start:start + n] - old[start:start + n]).mean())
        total = total + torch.maximum(-a * s, -a * torch.clamp(s, 1 - clip_low, 1 + clip_high))
        start += n
    return total / len(lengths)


def test_gspo_matches_a_per_sequence_reference():
    g = torch.Generator().manual_seed(0)
    lengths = [3, 7, 1, 5]
    adv_seq = [1.5, -0.5, 0.0, -2.0]
    n = sum(lengths)
    seq = torch.repeat_interleave(torch.arange(4), torch.tensor(lengths))
    adv = torch.tensor(adv_seq, dtype=torch.float64)[seq]
    old = -torch.rand(n, generator=g, dtype=torch.float64)
    base = old + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
    algo = AlgoConfig(clip_low=0.02, clip_high=0.03)
    loss, _ = get_loss("gspo")(_inputs(a, old, adv, seq), algo)
    ref = _reference(b, old, adv_seq, lengths, 0.02, 0.03)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert a.grad.abs().sum() > 0


def test_gspo_without_sequences_is_an_error():
    x = _inputs(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="train.update = flat"):
        get_loss("gspo")(dataclasses.replace(x, seq_index=None), AlgoConfig())


def test_one_training_step_with_gspo(tmp_path):
    from arpo.train.tracking import read_metrics
    from arpo.train.trainer import Trainer

    cfg = tiny(tmp_path / "gspo", "train.total_steps=1", "train.update=flat", "algo.loss=gspo",
               "algo.clip_low=0.0003", "algo.clip_high=0.0004")
    assert Trainer(cfg, progress=False).train() == 0
    (m,) = read_metrics(tmp_path / "gspo")
    assert math.isfinite(m["loss"]) and "clip_frac_high" in m and m["ratio_min"] <= m["ratio_max"]


@pytest.mark.parametrize("field", ["logprobs", "old_logprobs", "advantages"])
def test_gspo_names_non_finite_inputs(field):
    seq = torch.tensor([0, 0, 1])
    lp, old, adv = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), torch.ones(3)
    {"logprobs": lp, "old_logprobs": old, "advantages": adv}[field][1] = math.nan
    with pytest.raises(ValueError, match=f"{field} has 1 NaN or inf"):
        get_loss("gspo")(_inputs(lp, old, adv.double(), seq), AlgoConfig())
