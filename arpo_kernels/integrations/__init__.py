"""The arpo_kernels inside other RL libraries. Each submodule imports its library (and arpo_kernels, never
arpo); this package itself imports nothing, so it loads where neither library is installed.

- ``arpo_kernels.integrations.verl``: registers ``"arpo_vanilla"`` in verl's policy-loss registry: verl's
  ``vanilla`` clipped PPO loss (every ``loss_agg_mode``, dual clip, rollout importance weights) computed by the
  fused ``policy_loss`` kernel. Installing arpo-engine registers it in every process that imports verl (a
  ``verl.plugins`` entry point).
- ``arpo_kernels.integrations.trl``: ``ArpoGRPOTrainer`` (or ``ArpoKernelsMixin`` for a subclass of TRL's
  ``GRPOTrainer``): per-token log-probs and entropies from the final hidden states through
  ``linear_logprob_entropy``, then the clipped GRPO loss through the fused ``policy_loss`` kernel; settings it
  does not reproduce exactly are refused when the trainer is built, with an error naming them.
"""
