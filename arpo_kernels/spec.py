"""The policy-loss contract, defined once: the choice lists, the clamps, the hyper-parameters and the per-token
inputs every backend (torch, numba, Triton) and the reference read. Imports nothing heavy.

Every batch reaches the kernels in one form, the packed one (DESIGN.md, "Tree packing is exact"): per token,
sums over the token's copies j with aggregation weights w_j and advantages A_j. A flat token is a packed token
with one copy (``policy_loss`` builds its terms from (advantages, weights)); a tree-packed token has as many
copies as leaves below it (``arpo.tree.pack_trees``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Optional

if TYPE_CHECKING:
    from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_TYPES = ("low_var_kl", "k1", "k2")
BACKENDS = ("auto", "triton", "numba", "torch")
LOG_RATIO_CLAMP = 20.0  # |log(new/old)| is clamped here before exp
KL_LOG_CLAMP = 20.0  # low_var_kl: ref - lp is clamped to ±20 before exp ...
KL_VALUE_CLAMP = 10.0  # ... and the estimate to ±10 (verl's kl_penalty)

# Layout of the partial sums every backend returns, [chunks, len(PARTS)]: weighted sums, counts of non-finite
# inputs on tokens in the loss (reported as errors), and the ratio min/max last.
PARTS = ("pg", "kl", "ent", "w", "w_ratio", "w_neg_log_ratio", "clip_high", "clip_low", "dual", "bad_logprobs",
         "bad_old_logprobs", "bad_advantages", "bad_ref_logprobs", "bad_entropy", "ratio_min", "ratio_max")


class TokenTerms(NamedTuple):
    """Per-token sums over copies, each [N] in one float dtype. A token counts in the loss when it has a weight
    or an advantage term; adv_pos >= 0 >= adv_neg."""

    adv_pos: "Tensor"  # Σ w·A over copies with A > 0
    adv_neg: "Tensor"  # Σ w·A over copies with A < 0
    weight: "Tensor"  # Σ w (the KL and entropy terms' weight)
    weight_pos: "Tensor"  # Σ w over copies with A > 0 (clip-fraction metrics)
    weight_neg: "Tensor"  # Σ w over copies with A < 0


class FlatTerms(NamedTuple):
    """A flat batch's terms before they are split into TokenTerms: the numba backend splits each token inside its
    kernel (no [N] temporaries); ``policy_loss.flat_terms`` gives the same TokenTerms for the other backends."""

    advantages: "Tensor"  # [N]
    weight: "Tensor"  # [N] aggregation weights, or [1]: the weight of every token in `mask` (token-mean)
    mask: Optional["Tensor"]  # [N] uint8 0/1 beside a [1] weight, else None


class PolicyInputs(NamedTuple):
    """What a backend's ``fused(x, params)`` reads: [N] tensors of one float dtype; entropy and ref_logprobs may
    be None; terms a TokenTerms (every backend) or a FlatTerms (numba only). It returns (parts [chunks,
    len(PARTS)] float64, d loss / d logprobs [N], d loss / d entropy [N], which may be None when entropy is)."""

    logprobs: "Tensor"
    old_logprobs: "Tensor"
    entropy: Optional["Tensor"]
    ref_logprobs: Optional["Tensor"]
    terms: "TokenTerms | FlatTerms"


@dataclass(frozen=True)
class PolicyLossParams:
    """Scalar hyper-parameters of the policy loss."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.0
    kl_type: str = "low_var_kl"
    entropy_coef: float = 0.0

    def __post_init__(self):
        for name in ("clip_low", "clip_high", "kl_coef", "entropy_coef"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"clip_low must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0.0:
            raise ValueError(f"clip_high must be >= 0, got {self.clip_high}")
        if self.dual_clip is not None and not (math.isfinite(self.dual_clip) and self.dual_clip > 1.0):
            raise ValueError(f"dual_clip must be None or a finite number > 1, got {self.dual_clip}")
        if self.kl_type not in KL_TYPES:
            raise ValueError(f"unknown kl_type {self.kl_type!r}: expected one of {', '.join(KL_TYPES)}")

    @property
    def bounds(self) -> tuple[float, float, float]:
        """(1 - clip_low, 1 + clip_high, dual clip bound or +inf)."""
        return 1.0 - self.clip_low, 1.0 + self.clip_high, math.inf if self.dual_clip is None else self.dual_clip

    @property
    def kl_code(self) -> int:
        return KL_TYPES.index(self.kl_type)
