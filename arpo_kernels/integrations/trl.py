"""TRL's GRPOTrainer on the arpo_kernels: ``ArpoGRPOTrainer`` is ``GRPOTrainer`` with two methods replaced
(``ArpoKernelsMixin`` does the same for a subclass of it):

- ``_get_per_token_logps_and_entropies`` (the loss's log-probs, and the old/ref log-probs TRL computes when it
  scores a generation batch): the decoder's final hidden states [B, T, H] and the LM head [V, H] go through
  ``linear_logprob_entropy``, so at most a [chunk, V] tile of logits exists;
- ``_compute_loss``: TRL's clipped GRPO objective through the fused ``policy_loss`` kernel. Per-token weights
  reproduce the aggregation of ``loss_type`` (grpo, bnpo, dr_grpo, dapo, luspo) and the gradient-accumulation
  scaling; ``delta`` (two-sided clipping) is the kernel's dual clip. The KL term (``beta`` != 0: TRL's k3
  estimator, times the ratio with ``use_bias_correction_kl``) and the entropy bonus (TRL's masked token mean)
  are added outside the kernel in torch, with TRL's formulas. The logged metrics are TRL's own (kl, entropy,
  clip_ratio/*, policy_loss).

For the settings it accepts, loss and gradients equal TRL's own ``_compute_loss`` (tests/integrations). What it
would not reproduce is refused when the trainer is built, with a NotImplementedError naming the setting (see
``unsupported_settings``); multimodal inputs are refused per call. Numerical difference: the policy-loss
kernel clamps the log-ratio to ±20 before exp; TRL does not (ratios beyond e^20 only).
"""
from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.models.utils import _ForwardRedirection
from trl.trainer.utils import nanmax, nanmin

from ..hf import lm_head_inputs
from ..linear_logprob_entropy import linear_logprob_entropy
from ..policy_loss import flat_terms, policy_loss_packed

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
MULTIMODAL_INPUTS = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                     "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def unsupported_settings(trainer: GRPOTrainer) -> list[str]:
    """The settings of a built GRPOTrainer that ArpoKernelsMixin does not reproduce exactly (empty: none)."""
    args, out = trainer.args, []
    if trainer.loss_type not in LOSS_TYPES:
        out.append(f"loss_type={trainer.loss_type!r} (supported: {', '.join(LOSS_TYPES)})")
    if trainer.importance_sampling_level != "token":
        out.append(f"importance_sampling_level={trainer.importance_sampling_level!r} (only 'token')")
    if trainer.top_entropy_quantile < 1.0:
        out.append(f"top_entropy_quantile={trainer.top_entropy_quantile} (only 1.0)")
    if trainer.off_policy_mask_threshold is not None:
        out.append("off_policy_mask_threshold (the off-policy sequence mask)")
    if trainer.use_vllm and trainer.vllm_importance_sampling_correction:
        out.append("vllm_importance_sampling_correction")
    if trainer.use_adaptive_entropy:
        out.append("use_adaptive_entropy")
    if args.delta is not None and args.delta < 1.0 + trainer.epsilon_high:
        out.append(f"delta={args.delta} < 1 + epsilon_high (it would clip positive advantages too)")
    if trainer.aux_loss_enabled:
        out.append("the MoE router aux loss (router_aux_loss_coef != 0)")
    if hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config"):
        out.append("a PEFT model (untested with the kernels)")
    if getattr(trainer, "is_fsdp_enabled", False):
        out.append("FSDP (the LM head weight is sharded outside the forward)")
    deepspeed = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if deepspeed is not None and deepspeed.zero_stage == 3:
        out.append("DeepSpeed ZeRO-3 (the LM head weight is sharded outside the forward)")
    return out


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, *,
                        temperature: float = 1.0, fp32_head: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies [B, C] of the last C = logits_to_keep tokens of input_ids [B, T] under `model`
    (a transformers causal LM whose logits are lm_head(hidden)), at `temperature`; 0 where attention_mask is
    0. The decoder runs under the caller's autocast, the LM head in the hidden states' dtype (fp32 with
    fp32_head)."""
    if not 0 < logits_to_keep < input_ids.shape[1]:
        raise ValueError(f"logits_to_keep must be in [1, {input_ids.shape[1] - 1}] (at least one prompt "
                         f"token), got {logits_to_keep}")
    hidden, weight = lm_head_inputs(model, input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    h = hidden[:, -logits_to_keep - 1:-1]  # [B, C, H]: the state before each completion token predicts it
    h, weight = (h.float(), weight.float()) if fp32_head else (h, weight.to(h.dtype))
    targets = input_ids[:, -logits_to_keep:].masked_fill(attention_mask[:, -logits_to_keep:] == 0, -100)
    with torch.autocast(h.device.type, enabled=False):
        lp, ent = linear_logprob_entropy(h.reshape(-1, h.shape[-1]), weight, targets.reshape(-1),
                                         temperature=temperature)
    return lp.view(targets.shape), ent.view(targets.shape)


class ArpoKernelsMixin:
    """Put before GRPOTrainer (or a subclass of it) in the bases: log-probs, entropies and the GRPO loss through
    the arpo_kernels. Building the trainer raises NotImplementedError for settings it does not reproduce."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        problems = unsupported_settings(self)
        if problems:
            raise NotImplementedError("the arpo kernels do not reproduce GRPOTrainer's loss with: "
                                      + "; ".join(problems))
        self._arpo_redirect = _ForwardRedirection()  # calls through the DDP wrapper's forward

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, compute_aux_loss=False,
                                           **multimodal):
        """TRL's signature: [B, C] log-probs, [B, C] entropies (None unless compute_entropy), aux loss None."""
        given = sorted(k for k, v in multimodal.items() if v is not None)
        if given or compute_aux_loss:
            got = given or "compute_aux_loss"
            raise NotImplementedError(f"the arpo kernels take text-only inputs, got {got}")
        unwrapped = self.accelerator.unwrap_model(model)
        step = batch_size or input_ids.size(0)
        parts = [self._arpo_redirect(model, unwrapped, self._arpo_logprobs, unwrapped, input_ids[s:s + step],
                                     attention_mask[s:s + step], logits_to_keep)
                 for s in range(0, input_ids.size(0), step)]
        logps = torch.cat([lp for lp, _ in parts])
        return logps, torch.cat([ent for _, ent in parts]) if compute_entropy else None, None

    def _arpo_logprobs(self, model, input_ids, attention_mask, logits_to_keep):
        with self.accelerator.autocast():
            return completion_logprobs(model, input_ids, attention_mask, logits_to_keep,
                                       temperature=self.temperature, fp32_head=self.args.cast_lm_head_to_fp32)

    def _compute_loss(self, model, inputs):
        present = sorted(k for k in MULTIMODAL_INPUTS if inputs.get(k) is not None)
        if present:
            raise NotImplementedError(f"the arpo kernels take text-only inputs, got {present}")
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else \
            inputs["completion_mask"] * inputs["tool_mask"]
        lp, ent, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                             completion_ids.size(1), compute_entropy=True)
        adv = inputs["advantages"]
        adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [B, 1] or [B, C]
        old = inputs.get("old_per_token_logps")
        old = lp.detach() if old is None else old
        mode = "train" if self.model.training else "eval"
        accum = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        weights = self._arpo_loss_weights(mask.to(lp.dtype), inputs, mode, accum)
        terms = flat_terms(adv.expand_as(lp), weights)
        loss, _ = policy_loss_packed(lp, old, terms.adv_pos, terms.adv_neg, terms.weight,
                                     clip_low=self.epsilon_low, clip_high=self.epsilon_high,
                                     dual_clip=self.args.delta)
        kl = None
        if self.beta != 0.0:
            kl = self._arpo_kl(lp, old, inputs["ref_per_token_logps"])
            loss = loss + self.beta * (weights * kl).sum()
        if self._entropy_bonus_enabled:
            policy = loss.detach() if self.loss_type == "dapo" else loss.detach() * accum  # TRL's policy_loss
            m = mask.to(ent.dtype)
            loss = loss - self.entropy_coef * (ent * m).sum() / m.sum().clamp(min=1.0) / accum
            self._metrics[mode]["policy_loss"].append(self.accelerator.gather(policy).nanmean().item())
            if mode == "train" and self.accelerator.sync_gradients:
                self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        self._arpo_log(mode, lp.detach(), old, None if kl is None else kl.detach(), adv, ent.detach(),
                       mask.to(lp.dtype))
        return loss

    def _arpo_kl(self, lp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """TRL's per-token KL [B, C]: k3 = exp(ref - lp) - (ref - lp) - 1, times the ratio exp(lp - old) with
        use_bias_correction_kl (both differentiable in lp)."""
        d = ref - lp
        kl = torch.exp(d) - d - 1
        return kl * torch.exp(lp - old) if self.args.use_bias_correction_kl else kl

    def _arpo_loss_weights(self, m: torch.Tensor, inputs, mode: str, accum: float) -> torch.Tensor:
        """Per-token weights [B, C] such that Σ w·loss_t is TRL's aggregation of loss_type over the mask m."""
        rows = m.shape[0]
        if self.loss_type == "grpo":
            return m / m.sum(-1, keepdim=True).clamp(min=1.0) / (rows * accum)
        if self.loss_type == "bnpo":
            return m / m.sum().clamp(min=1.0) / accum
        if self.loss_type == "dr_grpo":
            return m / (rows * self.max_completion_length * accum)
        if self.loss_type == "luspo":
            return m / (rows * accum)
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes  # dapo
        if mode == "train":
            normalizer = normalizer * accum / self.args.steps_per_generation
        return m / normalizer

    @torch.no_grad()
    def _arpo_log(self, mode, lp, old, kl, adv, ent, m):
        """TRL's metrics of the loss: masked token means over all processes, per-sequence clip extremes."""
        def mean(x):
            totals = self.accelerator.reduce(torch.stack([(x * m).sum(), m.sum()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        def seq_mean(x):
            return self.accelerator.gather((x * m).sum(-1) / m.sum(-1))

        log = self._metrics[mode]
        if kl is not None:
            log["kl"].append(mean(kl))
        log["entropy"].append(mean(ent))
        ratio = torch.exp(lp - old)
        low = ((ratio < 1 - self.epsilon_low) & (adv < 0)).to(m.dtype)
        high = ((ratio > 1 + self.epsilon_high) & (adv > 0)).to(m.dtype)
        log["clip_ratio/low_mean"].append(mean(low))
        log["clip_ratio/high_mean"].append(mean(high))
        log["clip_ratio/region_mean"].append(mean(low + high))  # disjoint: opposite advantage signs
        log["clip_ratio/low_min"].append(nanmin(seq_mean(low)).item())
        log["clip_ratio/high_max"].append(nanmax(seq_mean(high)).item())


class ArpoGRPOTrainer(ArpoKernelsMixin, GRPOTrainer):
    """trl.GRPOTrainer with log-probs, entropies and the loss computed by the arpo_kernels; same arguments."""
