"""Final hidden states and the LM-head weight of a transformers causal LM, so a trainer can compute
log-probs/entropy with linear_logprob_entropy and never materialise [N, V] logits.

Supported: models whose logits are exactly `lm_head(last_hidden_state)` with a bias-free head (Llama, Qwen2/3,
Mistral, Phi-3, ...; tied embeddings included: the head's weight is then the embedding matrix). Models that
transform the logits or the final hidden state (soft-capping, logit scaling, width multipliers) are refused
with an error naming the setting, because the fused path would silently compute different log-probs.
"""
from __future__ import annotations

import torch

# config attribute -> the value at which it is a no-op (None: the attribute must be absent or None)
_UNSUPPORTED = {
    "final_logit_softcapping": None,  # Gemma 2/3: logits = c * tanh(logits / c)
    "logit_scale": 1.0,  # Cohere: logits * logit_scale
    "logits_scaling": 1.0,  # Granite: logits / logits_scaling
    "lm_head_multiplier": 1.0,  # Falcon-H1
    "scale_width": None,  # MiniCPM: hidden / (hidden_size / dim_model_base)
    "logits_mup_width_multiplier": 1.0,  # Inkling: hidden / multiplier before the head
}


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def lm_head_weight(model: torch.nn.Module) -> torch.Tensor:
    """The [V, H] LM-head weight, after checking that logits = hidden @ weight.T holds for this model."""
    config = _text_config(model.config)
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(config, name, None)
        if value is not None and value != neutral:
            raise NotImplementedError(
                f"{type(model).__name__} sets config.{name} = {value!r}: the fused log-prob path computes "
                "logits = hidden @ lm_head.weight.T and does not support this transform; use the logits path")
    unpadded = getattr(config, "unpadded_vocab_size", None)
    if unpadded is not None and unpadded != getattr(config, "vocab_size", unpadded):
        raise NotImplementedError(
            f"{type(model).__name__} slices its logits to config.unpadded_vocab_size = {unpadded}; the fused path "
            "uses the whole LM head")
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise NotImplementedError(f"{type(model).__name__} has no output embedding (LM head) weight")
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError(f"{type(model).__name__}'s LM head has a bias; the fused path does not add one")
    return head.weight


def lm_head_inputs(model: torch.nn.Module, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the decoder of `model` on `inputs` (input_ids, attention_mask, position_ids, ...) and return
    (final hidden states [B, L, H], LM-head weight [V, H]); hidden @ weight.T equals the model's logits."""
    weight = lm_head_weight(model)
    decoder = getattr(model, model.base_model_prefix, None)
    if decoder is None:
        raise NotImplementedError(f"{type(model).__name__} has no base model '{model.base_model_prefix}'")
    out = decoder(**inputs)
    return out.last_hidden_state, weight
