"""policy_loss / policy_loss_packed: the clipped PPO/GRPO objective with KL and entropy terms, forward and
backward fused in one pass over the tokens.

Both forms reach the kernels as the per-token sums over the token's copies of spec.TokenTerms (DESIGN.md, "Tree
packing is exact"): the flat form is the packed one with one copy per token (``flat_terms`` builds the terms
from the advantages and the aggregation weights w of `agg`); pack_trees produces them for tree-packed batches.
One kernel path per backend. The numba backend takes the flat form as a spec.FlatTerms (advantages, and the mask
with its one token-mean weight, or the per-token weights) and splits each token's terms inside its kernel, bit
for bit as ``flat_terms`` does, so a flat call makes no [N] temporaries; its backward hands the saved gradient to
autograd as it is when the upstream gradient is exactly 1 (``loss.backward()``). Per token,
with r = exp(clamp(logprobs - old_logprobs, ±20)):

    loss_t = -adv_pos·min(r, 1 + clip_high) - adv_neg·min(max(r, 1 - clip_low), dual_clip)
             + kl_coef·weight·KL(logprobs, ref_logprobs) - entropy_coef·weight·entropy

which equals max(-A·r, -A·clip(r, 1 - clip_low, 1 + clip_high)) (then min(·, -A·dual_clip) for A < 0) summed
with the weights. At a clip boundary (r exactly 1 ± ε, or the dual-clip bound) the gradient flows, as torch's
clamp does (code written with torch.minimum, like the reference, passes half of it exactly at the dual-clip
bound: a tie). Only `logprobs` and `entropy` receive gradients. A flat `mask` must be boolean or 0/1; a packed
token counts when it has a weight or an advantage term, and adv_pos >= 0 >= adv_neg is checked.

Metrics, all weighted like the loss (Σ over tokens of the weights, divided by Σ weight): clip_frac_high
(A > 0, r > 1 + clip_high), clip_frac_low (A < 0, r < 1 - clip_low), dual_clip_frac (A < 0, r > dual_clip),
approx_kl (old→new, mean of old - new log-prob), ratio_mean/min/max, entropy_mean, kl_mean, pg_loss.
"""
from __future__ import annotations

import importlib
import math

import numpy as np
import torch

from ._checks import FLOAT_DTYPES, out_dtype, resolve_backend
from .spec import AGG_MODES, PARTS, FlatTerms, PolicyInputs, PolicyLossParams, TokenTerms

_MODULES = {"numba": "._numba_policy_loss", "triton": "._triton_policy_loss", "torch": "._torch_policy_loss"}


def kernel_module(backend: str):
    return importlib.import_module(_MODULES[backend], __package__)


class PolicyLossFunction(torch.autograd.Function):
    """Runs a backend's fused pass (loss parts and both gradients at once, see spec.PolicyInputs); backward only
    scales them. ``lp``/``ent`` are the differentiable inputs; ``terms`` a spec.TokenTerms (or a spec.FlatTerms
    for the numba backend)."""

    @staticmethod
    def forward(ctx, lp, ent, old, ref, terms, params: PolicyLossParams, backend: str,
                adv_name: str = "advantages"):
        parts, dlp, dent = kernel_module(backend).fused(PolicyInputs(lp, old, ent, ref, terms), params)
        _raise_on_bad_inputs(parts, adv_name)
        sums = parts[:, :9].sum(0)
        loss = sums[0] + params.kl_coef * sums[1] - params.entropy_coef * sums[2]
        ctx.save_for_backward(dlp, dent)
        ctx.mark_non_differentiable(parts)
        return loss.to(lp.dtype), parts

    @staticmethod
    def backward(ctx, g_loss, _g_parts):
        dlp, dent = ctx.saved_tensors
        return (_scaled(g_loss, dlp), _scaled(g_loss, dent) if ctx.needs_input_grad[1] else None) + (None,) * 6


def _scaled(g_loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """g_loss · grad. For ``loss.backward()`` (g_loss exactly 1, on the CPU) the saved gradient itself: no fresh
    [N] buffer and no pass over it. Autograd owns it from here: it becomes ``.grad`` as it is, or is copied where
    the graph keeps it (retain_graph) or another gradient is added to it."""
    if g_loss.device.type == "cpu" and not g_loss.requires_grad and g_loss.dtype == grad.dtype and bool(g_loss == 1):
        return grad
    return g_loss * grad


def _raise_on_bad_inputs(parts: torch.Tensor, adv_name: str) -> None:
    """NaN/inf on tokens that count in the loss, counted by the kernel: an error naming the tensor (one sync)."""
    counts = parts[:, 9:14].sum(0).tolist()
    packed_adv = ("adv_pos/adv_neg/weight/weight_pos/weight_neg have {} invalid values (NaN, inf, adv_pos < 0 or "
                  "adv_neg > 0) on tokens that count in the loss")
    plain = "{} has {} NaN or inf values on tokens that count in the loss"
    for name, count in zip(["logprobs", "old_logprobs", adv_name, "ref_logprobs", "entropy"], counts):
        if count:
            message = packed_adv.format(int(count)) if name == "packed terms" else plain.format(name, int(count))
            raise ValueError(message)


def _metrics(parts: torch.Tensor, has_wsplit: bool, has_ref: bool, has_ent: bool) -> dict[str, torch.Tensor]:
    sums = dict(zip(PARTS[:9], parts[:, :9].sum(0)))
    w = sums["w"].clamp_min(1e-30)
    nan = torch.full_like(w, math.nan)
    some = sums["w"] != 0  # no token in the loss: the ratio extremes are undefined
    out = {"pg_loss": sums["pg"], "approx_kl": sums["w_neg_log_ratio"] / w, "ratio_mean": sums["w_ratio"] / w,
           "ratio_min": torch.where(some, parts[:, -2].min(), nan),
           "ratio_max": torch.where(some, parts[:, -1].max(), nan)}
    if has_wsplit:
        out.update(clip_frac_high=sums["clip_high"] / w, clip_frac_low=sums["clip_low"] / w,
                   dual_clip_frac=sums["dual"] / w)
    if has_ent:
        out["entropy_mean"] = sums["ent"] / w
    if has_ref:
        out["kl_mean"] = sums["kl"] / w
    return {k: v.detach() for k, v in out.items()}


# ---- argument checks ----------------------------------------------------------------------------------------
def _check_tensor(name: str, t, like: torch.Tensor, float_only: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)} (the shape of logprobs)")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but logprobs on {like.device}")
    if float_only and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")


def _run(lp, old, ent, ref, terms, params: PolicyLossParams, backend: str, adv_name: str,
         has_wsplit: bool = True):
    """Shapes already checked: everything flattened to [N] in the accumulation dtype, then the fused pass."""
    if params.kl_coef != 0.0 and ref is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    if params.entropy_coef != 0.0 and ent is None:
        raise ValueError("entropy_coef != 0 needs entropy")
    backend = resolve_backend(backend, lp.device)
    acc = out_dtype(lp.dtype)

    def prep(v):
        return None if v is None else v.reshape(-1).to(acc).contiguous()

    if isinstance(terms, FlatTerms):
        terms = FlatTerms(prep(terms.advantages), prep(terms.weight), terms.mask)
    else:
        terms = TokenTerms(*map(prep, terms))
    loss, parts = PolicyLossFunction.apply(prep(lp), prep(ent), prep(old), prep(ref), terms, params, backend,
                                           adv_name)
    return loss, _metrics(parts, has_wsplit, ref is not None, ent is not None)


def flat_terms(advantages: torch.Tensor, weights: torch.Tensor) -> TokenTerms:
    """The packed terms of a flat batch (one copy per token): adv_pos = w·A where A > 0, adv_neg = w·A where
    A < 0, weight = w, weight_pos/weight_neg = w where A > 0 / A < 0. Tokens with w = 0 get no terms whatever A
    holds; a NaN/inf advantage of a weighted token stays in adv_pos/adv_neg so the kernel reports it. Any
    shapes (one for both); CPU float32/float64 run one numba pass, others torch ops."""
    a, weights = advantages.detach().to(weights.dtype), weights.detach()  # no gradient flows into the terms
    if weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.float64):
        flat = kernel_module("numba").flat_terms(a.reshape(-1).contiguous(), weights.reshape(-1).contiguous())
        return TokenTerms(*(t.view(weights.shape) for t in flat))
    a = torch.where(weights != 0, a, 0.0)
    wa = weights * a
    zero = torch.zeros((), dtype=weights.dtype, device=weights.device)
    return TokenTerms(torch.where(a < 0, zero, wa), torch.where(a > 0, zero, wa), weights,
                      torch.where(a > 0, weights, zero), torch.where(a < 0, weights, zero))


# ---- public API ---------------------------------------------------------------------------------------------
def flat_weights(mask: torch.Tensor, agg: str, seq_index: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Aggregation weight of each token (0 off the mask): the loss is Σ w·loss_token. Sequences are the rows of a
    2-D mask or the ids in `seq_index` (1-D); sequences without tokens are not counted."""
    if agg not in AGG_MODES:
        raise ValueError(f"unknown agg {agg!r}: expected one of {', '.join(AGG_MODES)}")
    m = (mask != 0).to(dtype)
    if agg == "token-mean":
        return m.div_(m.sum().clamp_min(1.0))
    ids = _sequence_ids(m, agg, seq_index)
    per_seq = torch.zeros(int(ids.max()) + 1 if ids.numel() else 0, dtype=m.dtype, device=m.device)
    per_seq.index_add_(0, ids.reshape(-1), m.reshape(-1))
    num_seqs = (per_seq > 0).sum().clamp_min(1)
    per_token = per_seq[ids] if agg == "seq-mean-token-mean" else torch.ones_like(m)
    return m / (num_seqs * per_token).clamp_min(1.0)


def _sequence_ids(m: torch.Tensor, agg: str, seq_index) -> torch.Tensor:
    if seq_index is None:
        if m.dim() != 2:
            raise ValueError(f"agg={agg!r} needs 2-D [B, L] inputs or seq_index for 1-D inputs")
        return torch.arange(m.shape[0], device=m.device)[:, None].expand_as(m)
    if not isinstance(seq_index, torch.Tensor) or seq_index.shape != m.shape or \
            seq_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"seq_index must be an int tensor of shape {tuple(m.shape)}")
    if seq_index.numel() and int(seq_index.min()) < 0:
        raise ValueError("seq_index must be >= 0")
    return seq_index.to(m.device).long()


def policy_loss(logprobs, old_logprobs, advantages, mask, *, clip_low=0.2, clip_high=0.2, dual_clip=None,
                ref_logprobs=None, kl_coef=0.0, kl_type="low_var_kl", entropy=None, entropy_coef=0.0,
                agg="token-mean", seq_index=None, backend="auto"):
    """Flat form: tensors of one shape ([N] or [B, L]); `mask` selects the tokens in the loss. Returns
    (loss, metrics) with loss a 0-d tensor differentiable in logprobs (and entropy)."""
    params = PolicyLossParams(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef)
    _check_tensor("logprobs", logprobs, logprobs)
    for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("ref_logprobs", ref_logprobs),
                    ("entropy", entropy)):
        if t is not None:
            _check_tensor(name, t, logprobs)
    _check_tensor("mask", mask, logprobs, float_only=False)
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be boolean or hold only 0 and 1 (token weights come from agg)")
    acc = out_dtype(logprobs.dtype)
    if resolve_backend(backend, logprobs.device) == "numba":  # the kernel splits the terms itself
        terms = _numba_flat_terms(advantages, mask, agg, seq_index, acc)
    else:
        terms = flat_terms(advantages, flat_weights(mask, agg, seq_index, dtype=acc))
    return _run(logprobs, old_logprobs, entropy, ref_logprobs, terms, params, backend, "advantages")


def _numba_flat_terms(advantages, mask, agg, seq_index, dtype) -> FlatTerms:
    """The flat terms as the numba kernel reads them. token-mean: the mask as bytes and the one weight of its
    tokens, 1 / count computed as flat_weights computes it (so both forms agree bit for bit); other modes: the
    flat_weights."""
    if agg != "token-mean":
        return FlatTerms(advantages.detach(), flat_weights(mask, agg, seq_index, dtype=dtype), None)
    m = mask.reshape(-1)
    m = (m if m.dtype == torch.bool else m != 0).contiguous().view(torch.uint8)
    count = np.count_nonzero(m.numpy())  # numpy: one thread, no wake-up of torch's OpenMP pool beside numba's
    one = np.ones(1, dtype=np.float32 if dtype == torch.float32 else np.float64)
    return FlatTerms(advantages.detach(), torch.from_numpy(one / one.dtype.type(max(count, 1))), m)


def policy_loss_packed(logprobs, old_logprobs, adv_pos, adv_neg, weight, *, weight_pos=None, weight_neg=None,
                       clip_low=0.2, clip_high=0.2, dual_clip=None, ref_logprobs=None, kl_coef=0.0,
                       kl_type="low_var_kl", entropy=None, entropy_coef=0.0, backend="auto"):
    """Packed form on the arrays of arpo.tree.pack_trees ([T] each, as tensors): its loss and gradients equal
    policy_loss on the flat batch of the same trees. Without weight_pos/weight_neg the clip fractions are not
    reported."""
    params = PolicyLossParams(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef)
    _check_tensor("logprobs", logprobs, logprobs)
    named = {"old_logprobs": old_logprobs, "adv_pos": adv_pos, "adv_neg": adv_neg, "weight": weight,
             "weight_pos": weight_pos, "weight_neg": weight_neg, "ref_logprobs": ref_logprobs, "entropy": entropy}
    for name, t in named.items():
        if t is not None:
            _check_tensor(name, t, logprobs)
    if (weight_pos is None) != (weight_neg is None):
        raise ValueError("give both weight_pos and weight_neg, or neither")
    has_wsplit = weight_pos is not None
    if not has_wsplit:  # clip fractions are not reported without them
        weight_pos = weight_neg = weight
    return _run(logprobs, old_logprobs, entropy, ref_logprobs,
                TokenTerms(adv_pos, adv_neg, weight, weight_pos, weight_neg), params, backend, "packed terms",
                has_wsplit)
