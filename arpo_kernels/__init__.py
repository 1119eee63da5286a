"""arpo_kernels: fused kernels for RL training, importable on their own (they never import `arpo`).

- logprob_entropy(logits, targets, ...): per-token log p(target) and full-vocabulary entropy, fused forward and
  backward (Triton on CUDA, numba on CPU, a torch reference as fallback).
- linear_logprob_entropy(hidden, weight, targets, ...): the same from hidden states and the LM-head weight,
  never materialising more than a [chunk, V] tile of logits.
- lm_head_inputs(model, ...): final hidden states and LM-head weight of a transformers causal LM.
- policy_loss(...) / policy_loss_packed(...): the clipped PPO/GRPO objective (clip-higher, dual clip, KL,
  entropy bonus, three aggregation modes) with metrics, forward and backward in one fused pass.
- warm_up(...): the kernels' one-time costs (numba cache and threads, Triton compiles) paid up front.
- release_gradient_buffers(): drop the CPU [N, V] gradient buffer logprob_entropy keeps for its next backward.
"""
from .hf import lm_head_inputs
from .linear_logprob_entropy import LinearLogprobEntropyFunction, linear_logprob_entropy
from ._memory import release_gradient_buffers
from .logprob_entropy import LogprobEntropyFunction, logprob_entropy
from .policy_loss import PolicyLossFunction, flat_terms, flat_weights, policy_loss, policy_loss_packed
from .reference import linear_logprob_entropy_reference, logprob_entropy_reference, policy_loss_reference
from .spec import AGG_MODES, KL_TYPES, PolicyInputs, PolicyLossParams, TokenTerms
from .warm import warm_up

__all__ = ["AGG_MODES", "KL_TYPES", "LinearLogprobEntropyFunction", "LogprobEntropyFunction", "PolicyInputs",
           "PolicyLossFunction", "PolicyLossParams", "TokenTerms", "flat_terms", "flat_weights",
           "linear_logprob_entropy", "linear_logprob_entropy_reference", "lm_head_inputs", "logprob_entropy",
           "logprob_entropy_reference", "policy_loss", "policy_loss_packed", "policy_loss_reference",
           "release_gradient_buffers", "warm_up"]
