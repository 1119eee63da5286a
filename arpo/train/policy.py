"""The trainable policy as a module whose forward gives the log-prob and entropy of a micro-batch's trainable
tokens: decoder → final hidden states at the ``src`` positions → ``arpo_kernels.linear_logprob_entropy``
with the LM head. Full [tokens, V] logits are never materialised.

Being one ``nn.Module`` whose forward touches every parameter (the LM-head weight included) is what DeepSpeed
needs: under ZeRO-3 the head weight, read directly rather than through the head's forward, is registered as
an external parameter of this module so that it is gathered for the forward.

Every micro-batch's rows (a path each when flat, a tree or part of one when packed) attend to ancestors only
(``span_end``): a dense 4D mask
``[B, 1, T, T]`` for SDPA (bool) or eager attention (additive); a flex-attention ``BlockMask`` when the model
was loaded with ``attn_implementation="flex_attention"`` (CUDA: torch 2.13 has no flex backward on CPU).
A packed forward must never go without its 4D mask: with tree position ids and no mask, transformers would
read the depth resets as sequence boundaries.
"""
from __future__ import annotations

import torch
from torch import nn

from arpo_kernels import linear_logprob_entropy
from arpo_kernels.hf import lm_head_inputs, lm_head_weight

from .microbatch import MicroBatch


def tree_mask(span_end: torch.Tensor) -> torch.Tensor:
    """span_end [B, T] -> [B, 1, T, T] bool, True where query q may attend key k in its row:
    k <= q < span_end[b, k] (k is q or an ancestor of q)."""
    t = span_end.shape[-1]
    pos = torch.arange(t, device=span_end.device)
    causal = pos[None, :] <= pos[:, None]  # [q, k]
    return (causal[None] & (pos[None, :, None] < span_end[:, None, :]))[:, None]


def packed_attention_mask(span_end: torch.Tensor, impl: str | None, dtype: torch.dtype):
    """The ancestor mask in the form attention implementation ``impl`` needs (transformers passes a 4D mask or
    a BlockMask through unchanged): sdpa a bool mask; eager an additive one (it adds the mask to the scores, so
    a bool mask would be silently wrong); flex_attention a BlockMask (only blocks holding visible keys run)."""
    if impl == "flex_attention":
        return flex_tree_mask(span_end)
    allowed = tree_mask(span_end)
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
            ~allowed, torch.finfo(dtype).min)
    raise NotImplementedError(f"attn_implementation={impl!r} cannot take a tree (ancestor) mask; load the model "
                              "with sdpa, eager or flex_attention, or use train.update = flat")


def flex_tree_mask(span_end: torch.Tensor):
    """The ancestor mask as a flex-attention BlockMask ([B, T] span_end)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def ancestor(b, h, q, k):
        return (k <= q) & (q < span_end[b, k])

    b, t = span_end.shape
    return create_block_mask(ancestor, B=b, H=None, Q_LEN=t, KV_LEN=t, device=span_end.device)


class PolicyLogprobs(nn.Module):
    """``model`` (a transformers causal LM) → (log-probs [n], entropy [n]) of a micro-batch's targets at
    ``temperature`` (the rollout's: the sampler drew tokens from softmax(logits / T))."""

    def __init__(self, model: nn.Module, *, temperature: float = 1.0, backend: str = "auto"):
        super().__init__()
        lm_head_weight(model)  # refuses models whose logits are not hidden @ head.T, before any work
        self.model = model
        self.temperature = temperature
        self.backend = backend

    def forward(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, weight = lm_head_inputs(self.model, input_ids=mb.input_ids, attention_mask=self._mask(mb.span_end),
                                        position_ids=mb.position_ids, use_cache=False)
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.src)  # [n, H]
        if weight.dtype != h.dtype:  # bf16 autocast: fp32 master weight, bf16 activations
            weight = weight.to(h.dtype)
        return linear_logprob_entropy(h, weight, mb.targets, temperature=self.temperature, backend=self.backend)

    @property
    def block_sparse(self) -> bool:
        """True when packed masks are flex-attention BlockMasks (then whole trees make the best rows)."""
        return getattr(self.model.config, "_attn_implementation", None) == "flex_attention"

    def _mask(self, span_end: torch.Tensor):
        impl = getattr(self.model.config, "_attn_implementation", None)
        return packed_attention_mask(span_end, impl, next(self.model.parameters()).dtype)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations in the backward pass (transformers 5 renamed the method)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
