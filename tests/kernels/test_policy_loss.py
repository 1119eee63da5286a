"""policy_loss / policy_loss_packed on every backend: against the verl-style torch reference (values, metrics,
gradients via autograd on the reference), fp64 gradcheck, hand-computed clip boundaries, packed == flat on
random trees, and clear errors."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arpo.algos.advantages import ESTIMATORS
from arpo.tree import TrajectoryTree, flatten_trees, pack_trees
from arpo_kernels import flat_weights, policy_loss, policy_loss_packed, policy_loss_reference
from arpo_kernels.reference import kl_reference

from ..tree.treegen import build, forest_specs, leaf_adv, packed_prefix_hashes, prefix_hashes
from .common import device_for, skip_triton_without_runtime

BACKENDS = [pytest.param("triton", marks=skip_triton_without_runtime), "numba", "torch"]
AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


def batch(b=5, l=11, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(b, l, generator=g, dtype=torch.float64) * 3
    old = lp + torch.randn(b, l, generator=g, dtype=torch.float64) * 0.35  # ratios well beyond the clip range
    adv = torch.randn(b, l, generator=g, dtype=torch.float64)
    adv[0, :3] = 0.0
    mask = torch.rand(b, l, generator=g) > 0.25
    mask[-1] = False  # a sequence without loss tokens
    ref = lp + torch.randn(b, l, generator=g, dtype=torch.float64) * 0.3
    ent = torch.rand(b, l, generator=g, dtype=torch.float64) * 2
    return [t.to(dtype) if t.dtype == torch.float64 else t for t in (lp, old, adv, mask, ref, ent)]


def expected_metrics(lp, old, adv, mask, agg, clip_low, clip_high, dual_clip, ref, kl_type, ent):
    """Metrics computed directly from the flat tensors, weighted by the flat aggregation weights."""
    w = flat_weights(mask, agg)
    r = torch.exp(lp - old)
    tw = w.sum()
    out = {"approx_kl": (w * (old - lp)).sum() / tw, "ratio_mean": (w * r).sum() / tw,
           "ratio_min": r[mask].min(), "ratio_max": r[mask].max(),
           "clip_frac_high": (w * ((adv > 0) & (r > 1 + clip_high))).sum() / tw,
           "clip_frac_low": (w * ((adv < 0) & (r < 1 - clip_low))).sum() / tw,
           "dual_clip_frac": (w * ((adv < 0) & (r > (dual_clip or math.inf)))).sum() / tw,
           "entropy_mean": (w * ent).sum() / tw}
    if ref is not None:
        out["kl_mean"] = (w * kl_reference(lp, ref, kl_type)).sum() / tw
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("dual_clip", [None, 1.3])
@pytest.mark.parametrize("kl_type", [None, "low_var_kl", "k1", "k2"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_matches_reference(backend, agg, dual_clip, kl_type, entropy_coef):
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = batch()
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=dual_clip, agg=agg, entropy_coef=entropy_coef,
              ref_logprobs=None if kl_type is None else ref, kl_coef=0.0 if kl_type is None else 0.05,
              kl_type=kl_type or "low_var_kl")
    x, e = lp.clone().requires_grad_(), ent.clone().requires_grad_()
    loss = policy_loss_reference(x, old, adv, mask, entropy=e, **kw)
    loss.backward()
    y, f = lp.to(dev).requires_grad_(), ent.to(dev).requires_grad_()
    ours, metrics = policy_loss(y, old.to(dev), adv.to(dev), mask.to(dev), entropy=f, backend=backend,
                                **{k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
    ours.backward()
    # fp64 throughout; the kernels sum in another order than torch: agreement to ~1e-15 relative
    torch.testing.assert_close(ours.cpu(), loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y.grad.cpu(), x.grad, rtol=1e-12, atol=1e-14)
    e_grad = torch.zeros_like(ent) if e.grad is None else e.grad  # the reference skips the unused entropy term
    torch.testing.assert_close(f.grad.cpu(), e_grad, rtol=1e-12, atol=1e-14)
    want = expected_metrics(lp, old, adv, mask, agg, 0.2, 0.28, dual_clip, kw["ref_logprobs"], kw["kl_type"], ent)
    for name, value in want.items():
        torch.testing.assert_close(metrics[name].cpu().double(), value.double(), rtol=1e-12, atol=1e-14, msg=name)
    if kl_type is None:
        assert "kl_mean" not in metrics
    assert 0 < metrics["clip_frac_high"] + metrics["clip_frac_low"] < 1  # the batch does exercise clipping


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_inputs(backend):
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = batch(dtype=torch.float32)
    x = lp.to(dev).requires_grad_()
    loss, _ = policy_loss(x, old.to(dev), adv.to(dev), mask.to(dev), ref_logprobs=ref.to(dev), kl_coef=0.1,
                          agg="seq-mean-token-mean", backend=backend)
    loss.backward()
    y = lp.detach().double().requires_grad_()
    ref_loss = policy_loss_reference(y, old.double(), adv.double(), mask, ref_logprobs=ref.double(), kl_coef=0.1,
                                     agg="seq-mean-token-mean")
    ref_loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.float32
    # fp32 inputs, fp32 per-token math: relative error ~1e-7 per term, sums of ~40 terms
    torch.testing.assert_close(loss.cpu().double(), ref_loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(x.grad.cpu().double(), y.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kl_type", ["low_var_kl", "k1", "k2"])
def test_gradcheck_fp64(backend, kl_type):
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = (t.to(dev) for t in batch(3, 6, seed=3))

    def fn(x, e):
        return policy_loss(x, old, adv, mask, entropy=e, ref_logprobs=ref, kl_coef=0.2, kl_type=kl_type,
                           entropy_coef=0.05, dual_clip=2.0, agg="seq-mean-token-mean", backend=backend)[0]

    # the clipped objective has kinks at the clip bounds; gradcheck's finite differences (eps 1e-6) stay on one
    # side of them for these ratios (none within 1e-5 of a bound)
    r = torch.exp(lp - old)
    for bound in (0.8, 1.2, 2.0):
        assert ((r - bound).abs() > 1e-5).all()
    assert torch.autograd.gradcheck(fn, (lp.requires_grad_(), ent.requires_grad_()), eps=1e-6, atol=1e-8)


# ---- hand-computed cases ------------------------------------------------------------------------------------
def one_token(lr, adv, backend="numba", **kw):
    dev = device_for(backend)
    lp = torch.tensor([-1.0 + lr], dtype=torch.float64, device=dev, requires_grad=True)
    loss, m = policy_loss(lp, torch.tensor([-1.0], dtype=torch.float64, device=dev),
                          torch.tensor([adv], dtype=torch.float64, device=dev),
                          torch.tensor([True], device=dev), backend=backend, **kw)
    loss.backward()
    return loss.item(), lp.grad.item(), {k: v.item() for k, v in m.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_boundaries_by_hand(backend):
    # ratio exactly 1 with clip 0: r sits on both bounds; the gradient flows (as through torch.clamp)
    for adv in (1.0, -1.0):
        loss, grad, m = one_token(0.0, adv, backend, clip_low=0.0, clip_high=0.0)
        assert loss == -adv and grad == -adv and m["clip_frac_high"] == 0 and m["clip_frac_low"] == 0
    # ratio exactly 1 + eps (eps = 2^-10: 1 + eps is exact and exp(log1p(eps)) rounds back to it): on the bound,
    # so unclipped, with the full gradient
    eps = 2.0**-10
    loss, grad, m = one_token(math.log1p(eps), 1.0, backend, clip_high=eps)
    assert loss == -(1 + eps) and grad == -(1 + eps) and m["clip_frac_high"] == 0
    # just above 1 + 0 for A > 0: clipped, no gradient, counted as clipped-high
    loss, grad, m = one_token(1e-3, 1.0, backend, clip_low=0.0, clip_high=0.0)
    assert loss == -1.0 and grad == 0.0 and m["clip_frac_high"] == 1.0
    # A < 0 below 1 - eps: clipped low
    loss, grad, m = one_token(math.log(0.5), -2.0, backend, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(2 * 0.8) and grad == 0.0 and m["clip_frac_low"] == 1.0
    # A < 0, r = e^1.5 > dual clip 3: loss = |A|·c, no gradient
    loss, grad, m = one_token(1.5, -1.0, backend, dual_clip=3.0)
    assert loss == pytest.approx(3.0) and grad == 0.0 and m["dual_clip_frac"] == 1.0
    # inside the range: loss = -A·r, d/dlp = -A·r
    loss, grad, _ = one_token(0.1, 0.5, backend)
    assert loss == pytest.approx(-0.5 * math.exp(0.1)) and grad == pytest.approx(-0.5 * math.exp(0.1))
    # advantage 0: nothing
    loss, grad, _ = one_token(0.7, 0.0, backend)
    assert loss == 0.0 and grad == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_terms_by_hand(backend):
    """One token, A = 0 (no policy-gradient term), weight 1, kl_coef 1: the loss is the KL, the gradient dKL/dlp."""
    dev = device_for(backend)
    cases = [  # (kl_type, ref - lp, KL, dKL/dlp)
        ("k1", 0.5, -0.5, 1.0), ("k2", 0.5, 0.125, -0.5),
        ("low_var_kl", 0.5, math.exp(0.5) - 1.5, 1 - math.exp(0.5)),
        ("low_var_kl", -1.0, math.exp(-1.0), 1 - math.exp(-1.0)),
        ("low_var_kl", 5.0, 10.0, 0.0),  # e^5 - 6 > 10: clamped, no gradient
        ("low_var_kl", -30.0, 10.0, 0.0),  # ref - lp clamped at -20 first
    ]
    for kl_type, d, kl, dkl in cases:
        lp = torch.tensor([-2.0], dtype=torch.float64, device=dev, requires_grad=True)
        loss, m = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=torch.float64, device=dev),
                              torch.ones(1, dtype=torch.bool, device=dev), ref_logprobs=lp.detach() + d, kl_coef=1.0,
                              kl_type=kl_type, backend=backend)
        loss.backward()
        assert loss.item() == pytest.approx(kl, rel=1e-12, abs=1e-15), (kl_type, d)
        assert lp.grad.item() == pytest.approx(dkl, rel=1e-12, abs=1e-15), (kl_type, d)
        assert m["kl_mean"].item() == pytest.approx(kl, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_ratio_is_clamped_before_exp(backend):
    loss, grad, m = one_token(80.0, -1.0, backend)  # exp(80) would overflow fp32 and dominate; clamped at 20
    assert math.isfinite(loss) and grad == 0.0 and m["ratio_max"] == pytest.approx(math.exp(20.0))


# ---- packed == flat on random trees -------------------------------------------------------------------------
def token_values(h, salt):
    """Per-token quantity as a function of the path prefix, so every copy of a packed token gets the same."""
    return torch.from_numpy(np.sin((h % 9973) * 0.37 + salt)).to(torch.float64)


@pytest.mark.parametrize("credit", ["soft", "hard"])
@pytest.mark.parametrize("agg", AGGS)
@settings(max_examples=40, deadline=None)
@given(specs=forest_specs(), estimator=st.sampled_from(tuple(ESTIMATORS)), dual=st.sampled_from([None, 2.5]),
       kl=st.booleans(), ent=st.booleans())
def test_packed_equals_flat(specs, estimator, credit, agg, dual, kl, ent):
    trees = [build(TrajectoryTree, s) for s in specs]
    adv = leaf_adv(trees, estimator)
    f, p = flatten_trees(trees, adv, credit), pack_trees(trees, adv, credit, agg)
    real = f.attention_mask.astype(bool)
    fh = np.zeros(f.input_ids.shape, dtype=np.int64)
    for row in range(f.num_rows):
        fh[row, real[row]] = prefix_hashes(f.input_ids[row, real[row]])
    ph = packed_prefix_hashes(p)

    def quantities(h):
        lp = -1.5 + 0.5 * token_values(h, 0.0)
        return lp, lp + 0.3 * token_values(h, 1.0), lp + 0.2 * token_values(h, 2.0), 1 + token_values(h, 3.0)

    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=dual, kl_coef=0.1 if kl else 0.0, entropy_coef=0.05 if ent else 0.0)
    lp_f, old_f, ref_f, ent_f = quantities(fh)
    lp_f.requires_grad_()
    ent_f.requires_grad_()
    loss_f, m_f = policy_loss(lp_f, old_f, torch.from_numpy(f.advantages).double(), torch.from_numpy(f.loss_mask),
                              ref_logprobs=ref_f, entropy=ent_f, agg=agg, backend="numba", **kw)
    lp_p, old_p, ref_p, ent_p = quantities(ph)
    lp_p.requires_grad_()
    ent_p.requires_grad_()
    t = {k: torch.from_numpy(getattr(p, k)).double() for k in ("adv_pos", "adv_neg", "loss_weight", "weight_pos",
                                                             "weight_neg")}
    loss_p, m_p = policy_loss_packed(lp_p, old_p, t["adv_pos"], t["adv_neg"], t["loss_weight"],
                                     weight_pos=t["weight_pos"], weight_neg=t["weight_neg"], ref_logprobs=ref_p,
                                     entropy=ent_p, backend="numba", **kw)
    if f.loss_mask.any():
        loss_f.backward()
        loss_p.backward()
    # float32 weights/advantages from the tree builders: ~1e-7 relative per term
    scale = float(np.abs(f.advantages).max(initial=0.0)) + 1.0
    assert abs(loss_f.item() - loss_p.item()) <= 1e-6 * scale
    for name in ("clip_frac_high", "clip_frac_low", "dual_clip_frac", "ratio_mean", "approx_kl", "entropy_mean"):
        assert abs(m_f[name].item() - m_p[name].item()) <= 1e-6 * (1 + abs(m_f[name].item())), name
    if f.loss_mask.any():
        # the gradient of each packed token equals the summed gradients of its flat copies
        for grad_f, grad_p in ((lp_f.grad, lp_p.grad), (ent_f.grad, ent_p.grad)):
            sums_f, sums_p = {}, {}
            for h, g in zip(fh[real], grad_f.numpy()[real]):
                sums_f[h] = sums_f.get(h, 0.0) + g
            for h, g in zip(ph, grad_p.numpy()):
                sums_p[h] = sums_p.get(h, 0.0) + g
            for h in set(sums_f) | set(sums_p):
                assert abs(sums_f.get(h, 0.0) - sums_p.get(h, 0.0)) <= 1e-6 * scale


# ---- bad inputs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        (dict(old_logprobs=torch.zeros(3)), r"old_logprobs has shape \(3,\), expected \(5, 11\)"),
        (dict(agg="mean"), r"unknown agg 'mean'"),
        (dict(kl_type="k3", ref_logprobs=None), r"unknown kl_type 'k3'"),
        (dict(dual_clip=1.0), r"dual_clip must be None or a finite number > 1"),
        (dict(clip_low=1.0), r"clip_low must be in \[0, 1\)"),
        (dict(kl_coef=0.1, ref_logprobs=None), r"kl_coef != 0 needs ref_logprobs"),
        (dict(entropy_coef=0.1), r"entropy_coef != 0 needs entropy"),
        (dict(backend="cuda"), r"unknown backend 'cuda'"),
        (dict(nan_in="old_logprobs"), r"old_logprobs has 1 NaN or inf values on tokens that count"),
        (dict(nan_in="advantages"), r"advantages has 1 NaN or inf"),
        (dict(nan_in="ref_logprobs", kl_coef=0.1), r"ref_logprobs has 1 NaN or inf"),
        (dict(nan_in="logprobs"), r"^logprobs has 1 NaN or inf"),
    ],
)
def test_bad_inputs(change, message):
    lp, old, adv, mask, ref, ent = batch()
    kw = dict(logprobs=lp, old_logprobs=old, advantages=adv, mask=mask, ref_logprobs=ref)
    nan_in = change.pop("nan_in", None)
    kw.update(change)
    if nan_in:
        kw[nan_in] = kw[nan_in].clone()
        kw[nan_in][tuple(mask.nonzero()[0].tolist())] = float("nan")
    with pytest.raises((ValueError, TypeError), match=message):
        policy_loss(**kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_outside_the_mask_are_ignored(backend):
    """Padding may hold anything (NaN included): the loss, metrics and gradients do not change."""
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = (t.to(dev) for t in batch())
    kw = dict(ref_logprobs=ref, kl_coef=0.1, entropy=ent, entropy_coef=0.01, backend=backend)
    x = lp.clone().requires_grad_()
    clean, m_clean = policy_loss(x, old, adv, mask, **kw)
    clean.backward()
    dirty = {k: t.clone().masked_fill(~mask, float("nan")) for k, t in dict(lp=lp, old=old, ref=ref, ent=ent).items()}
    y = dirty["lp"].requires_grad_()
    loss, m = policy_loss(y, dirty["old"], adv, mask, ref_logprobs=dirty["ref"], kl_coef=0.1, entropy=dirty["ent"],
                          entropy_coef=0.01, backend=backend)
    loss.backward()
    assert loss.item() == clean.item()
    assert torch.equal(y.grad, x.grad) and (y.grad[~mask] == 0).all()
    assert all(torch.equal(m[k], m_clean[k]) for k in m)


def test_seq_modes_need_sequences():
    lp, old, adv, mask, ref, ent = batch()
    with pytest.raises(ValueError, match=r"needs 2-D \[B, L\] inputs or seq_index"):
        policy_loss(lp.reshape(-1), old.reshape(-1), adv.reshape(-1), mask.reshape(-1), agg="seq-mean-token-sum")
    seq = torch.arange(5)[:, None].expand(5, 11).reshape(-1)
    a, _ = policy_loss(lp.reshape(-1), old.reshape(-1), adv.reshape(-1), mask.reshape(-1), agg="seq-mean-token-sum",
                       seq_index=seq)
    b, _ = policy_loss(lp, old, adv, mask, agg="seq-mean-token-sum")
    torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["logprobs", "old_logprobs", "advantages", "ref_logprobs", "entropy"])
def test_every_backend_names_the_non_finite_tensor(backend, name):
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = (t.to(dev) for t in batch())
    kw = dict(logprobs=lp, old_logprobs=old, advantages=adv, mask=mask, ref_logprobs=ref, entropy=ent)
    kw[name] = kw[name].clone()
    kw[name][tuple(mask.nonzero()[1].tolist())] = float("inf")
    with pytest.raises(ValueError, match=rf"^{name} has 1 NaN or inf values"):
        policy_loss(**kw, kl_coef=0.1, entropy_coef=0.01, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_token_in_the_loss(backend):
    dev = device_for(backend)
    lp, old, adv, mask, ref, ent = (t.to(dev) for t in batch())
    x = lp.clone().requires_grad_()
    loss, m = policy_loss(x, old, adv, torch.zeros_like(mask), backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and (x.grad == 0).all()
    assert math.isnan(m["ratio_min"].item()) and math.isnan(m["ratio_max"].item())
    assert m["clip_frac_high"].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_flat_on_every_backend(backend):
    """A fixed random forest (the property test above runs numba only, for time)."""
    dev = device_for(backend)
    rng = np.random.default_rng(5)
    trees = []
    for _ in range(3):
        t = TrajectoryTree([1, 2])
        nodes = [0]
        for _ in range(9):
            nodes.append(t.add(int(rng.choice(nodes)), rng.integers(0, 50, 3).tolist(), bool(rng.random() < 0.7)))
        for leaf in t.leaves():
            t.set_reward(leaf, float(rng.integers(0, 3)))
        trees.append(t)
    adv = leaf_adv(trees)
    f, p = flatten_trees(trees, adv, "soft"), pack_trees(trees, adv, "soft", "seq-mean-token-mean")
    kw = dict(clip_high=0.28, dual_clip=2.0, backend=backend)

    def lp_of(ids, pos):  # a function of (token, depth): every copy of a packed token agrees
        return torch.from_numpy(-1.5 + 0.5 * np.cos(0.1 * ids + 0.37 * pos)).to(dev)

    def old_of(ids, pos):
        return lp_of(ids, pos) + torch.from_numpy(0.4 * np.sin(0.7 * ids + pos)).to(dev)

    loss_f, m_f = policy_loss(lp_of(f.input_ids, f.position_ids), old_of(f.input_ids, f.position_ids),
                              torch.from_numpy(f.advantages).double().to(dev), torch.from_numpy(f.loss_mask).to(dev),
                              agg="seq-mean-token-mean", **kw)
    t = {k: torch.from_numpy(getattr(p, k)).double().to(dev)
         for k in ("adv_pos", "adv_neg", "loss_weight", "weight_pos", "weight_neg")}
    loss_p, m_p = policy_loss_packed(lp_of(p.input_ids, p.position_ids), old_of(p.input_ids, p.position_ids),
                                     t["adv_pos"], t["adv_neg"], t["loss_weight"], weight_pos=t["weight_pos"],
                                     weight_neg=t["weight_neg"], **kw)
    assert abs(loss_f.item() - loss_p.item()) <= 1e-6  # float32 weights from the tree builders
    assert 0 < m_f["clip_frac_high"].item() + m_f["clip_frac_low"].item()
    for name in ("clip_frac_high", "clip_frac_low", "dual_clip_frac", "ratio_mean", "approx_kl"):
        assert abs(m_f[name].item() - m_p[name].item()) <= 1e-6, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_inputs_are_validated(backend):
    dev = device_for(backend)
    lp = torch.tensor([-1.0, -1.2, -0.5], dtype=torch.float64, device=dev)
    old = lp + 0.05
    pos = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64, device=dev)
    neg = torch.tensor([0.0, 0.0, -0.2], dtype=torch.float64, device=dev)
    w = torch.tensor([0.5, 0.5, 0.2], dtype=torch.float64, device=dev)
    full, _ = policy_loss_packed(lp, old, pos, neg, w, backend=backend)
    # the policy-gradient term does not depend on `weight`: a token with weight 0 but an advantage still counts
    no_w, _ = policy_loss_packed(lp, old, pos, neg, torch.zeros_like(w), backend=backend)
    assert no_w.item() == pytest.approx(full.item(), rel=1e-12)
    for name, bad in (("weight", torch.full_like(w, math.nan)), ("adv_pos", -pos), ("adv_neg", -neg)):
        args = dict(adv_pos=pos, adv_neg=neg, weight=w)
        args[name] = bad
        with pytest.raises(ValueError, match=r"adv_pos/adv_neg/weight/weight_pos/weight_neg have \d+ invalid"):
            policy_loss_packed(lp, old, backend=backend, **args)


def test_mask_must_be_binary():
    lp, old, adv, mask, ref, ent = batch()
    with pytest.raises(ValueError, match=r"mask must be boolean or hold only 0 and 1"):
        policy_loss(lp, old, adv, mask.double() * 0.5)
    a, _ = policy_loss(lp, old, adv, mask.double())
    b, _ = policy_loss(lp, old, adv, mask)
    assert a.item() == b.item()
