"""arpo_kernels.integrations.trl against TRL itself (1.16, installed), on a tiny random-initialised Qwen2 built
here (2 layers, hidden 64, the demo agent's 2,056-token vocabulary, initialiser range 0.5 so that next-token
distributions are peaked like a trained model's; nothing is downloaded).

Three comparisons, each on a batch with ragged completions, an empty completion and padding:
- log-probs and entropies: ArpoGRPOTrainer's vs plain fp64 logits (log_softmax of the model's own logits);
- loss and gradients w.r.t. every parameter, in fp64: ArpoGRPOTrainer vs TRL's own ``_compute_loss`` fed the
  plain fp64 log-probs (TRL's fused LM head accumulates in fp32 even for fp64 models, so it cannot be the fp64
  reference): agreement to rounding;
- the same in fp32, ArpoGRPOTrainer vs GRPOTrainer exactly as shipped: our error against the fp64 reference
  stays within 2x TRL's own fp32 error (plus a floor of a few fp32 ulps of the largest value).
"""
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

from arpo_kernels.integrations.trl import ArpoGRPOTrainer, unsupported_settings

from .readme import snippet

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"  # its tokenizer only
PROMPT, COMPLETION, ROWS = 5, 12, 6
EPS32 = torch.finfo(torch.float32).eps
# loss_type x KL (bias-corrected or not) x entropy bonus x two-sided clip (delta) x temperature
CONFIGS = {
    "grpo": dict(loss_type="grpo"),
    "dapo-kl": dict(loss_type="dapo", beta=0.04, epsilon_high=0.28),
    "bnpo-kl-entropy-delta": dict(loss_type="bnpo", beta=0.04, use_bias_correction_kl=False, entropy_coef=0.01,
                                  delta=1.5),
    "dr_grpo-temperature": dict(loss_type="dr_grpo", temperature=0.7),
    "luspo": dict(loss_type="luspo"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def reward_len(completions, **kwargs):
    return [len(c) / 20 for c in completions]


def grpo_args(tmp_path, dtype=torch.float32, **overrides) -> GRPOConfig:
    return GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=COMPLETION, use_cpu=True, bf16=False, report_to=[],
                      save_strategy="no", logging_steps=1, model_init_kwargs={"dtype": dtype}, **overrides)


def build(cls, model_dir, tokenizer, args, accumulation=2):
    data = Dataset.from_dict({"prompt": ["a b c", "d e", "f g h i", "j"] * 2})
    trainer = cls(model=model_dir, reward_funcs=reward_len, args=args, train_dataset=data,
                  processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = accumulation  # set by the training loop; 2 tests its scaling
    return trainer


class PlainLogitsTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with log-probs from the model's full logits (log_softmax in the model's dtype): the
    fp64 reference."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        logp = torch.log_softmax(logits[:, -logits_to_keep - 1:-1] / self.temperature, dim=-1)
        keep = attention_mask[:, -logits_to_keep:] != 0
        lp = logp.gather(-1, input_ids[:, -logits_to_keep:, None]).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        return lp.where(keep, 0.0), ent.where(keep, 0.0), None


def make_inputs(trainer, dtype, tool_mask=False) -> dict:
    """One training batch as TRL's _prepare_inputs hands it to _compute_loss: ragged completion masks (row 5
    empty), old/ref log-probs off by noise of std 0.3 so that ratios clip on both sides."""
    g = torch.Generator().manual_seed(0)
    vocab = trainer.model.config.vocab_size
    cm = torch.ones(ROWS, COMPLETION, dtype=torch.long)
    cm[1, 7:], cm[3, 2:], cm[5, :] = 0, 0, 0
    x = {"prompt_ids": torch.randint(3, vocab, (ROWS, PROMPT), generator=g),
         "prompt_mask": torch.ones(ROWS, PROMPT, dtype=torch.long),
         "completion_ids": torch.randint(3, vocab, (ROWS, COMPLETION), generator=g), "completion_mask": cm,
         "advantages": torch.randn(ROWS, generator=g), "num_items_in_batch": cm.sum().float()}
    x["prompt_mask"][2, :2] = 0  # left padding of a shorter prompt
    if tool_mask:
        x["tool_mask"] = torch.ones_like(cm)
        x["tool_mask"][0, 3:6] = 0
    with torch.no_grad():
        ids = torch.cat([x["prompt_ids"], x["completion_ids"]], 1)
        lp, _, _ = PlainLogitsTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, torch.cat([x["prompt_mask"], cm], 1), COMPLETION)
    noise = torch.randn(2, ROWS, COMPLETION, generator=g, dtype=torch.float64) * 0.3
    x["old_per_token_logps"] = (lp.double() + noise[0]).to(dtype)
    x["ref_per_token_logps"] = (lp.double() + noise[1]).to(dtype)
    return x


def loss_and_grads(trainer, inputs):
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.double() for n, p in trainer.model.named_parameters()}
    return loss.detach().double(), grads, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def max_err(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def max_abs(a: dict) -> float:
    return max(float(v.abs().max()) for v in a.values())


def test_logprobs_and_entropies_equal_plain_logits(tmp_path, model_dir, tokenizer):
    ours = build(ArpoGRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path, torch.float64, temperature=0.7))
    ref = build(PlainLogitsTrainer, model_dir, tokenizer, grpo_args(tmp_path, torch.float64, temperature=0.7))
    x = make_inputs(ref, torch.float64)
    ids = torch.cat([x["prompt_ids"], x["completion_ids"]], 1)
    mask = torch.cat([x["prompt_mask"], x["completion_mask"]], 1)
    c = torch.randn(2, ROWS, COMPLETION, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = {}
    for name, trainer in (("ours", ours), ("ref", ref)):
        lp, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, COMPLETION,
                                                                 batch_size=4, compute_entropy=True)
        ((c[0] * lp).sum() + (c[1] * ent).sum()).backward()
        out[name] = lp.detach(), ent.detach(), {n: p.grad for n, p in trainer.model.named_parameters()}
    (lp, ent, grads), (ref_lp, ref_ent, ref_grads) = out["ours"], out["ref"]
    assert 0.5 < float(ref_ent[x["completion_mask"] == 1].mean()) < 4.0  # peaked, not uniform (ln V = 7.6)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ent, ref_ent, rtol=1e-10, atol=1e-12)
    assert max_err(grads, ref_grads) <= 1e-10 * max_abs(ref_grads)
    assert (lp[x["completion_mask"] == 0] == 0).all() and (ent[x["completion_mask"] == 0] == 0).all()


@pytest.mark.parametrize("name", CONFIGS)
def test_same_loss_and_gradients_as_grpo_trainer(tmp_path, model_dir, tokenizer, name):
    settings = CONFIGS[name]
    ref = build(PlainLogitsTrainer, model_dir, tokenizer, grpo_args(tmp_path, torch.float64, **settings))
    x64 = make_inputs(ref, torch.float64, tool_mask=name == "grpo")
    ref_loss, ref_grads, ref_metrics = loss_and_grads(ref, x64)
    assert ref_metrics["clip_ratio/low_mean"] > 0 and ref_metrics["clip_ratio/high_mean"] > 0  # exercised

    ours64 = build(ArpoGRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path, torch.float64, **settings))
    loss, grads, metrics = loss_and_grads(ours64, x64)
    assert abs(float(loss - ref_loss)) <= 1e-10 * abs(float(ref_loss))
    assert max_err(grads, ref_grads) <= 1e-10 * max_abs(ref_grads)
    assert metrics.keys() == ref_metrics.keys()
    for key, value in ref_metrics.items():  # TRL takes the clip fractions' means in fp32
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

    x32 = {k: v.float() if v.is_floating_point() else v for k, v in x64.items()}
    trl32 = build(GRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path, **settings))
    ours32 = build(ArpoGRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path, **settings))
    trl_loss, trl_grads, _ = loss_and_grads(trl32, x32)
    loss32, grads32, _ = loss_and_grads(ours32, x32)
    loss_floor = 4 * EPS32 * abs(float(ref_loss))
    assert abs(float(loss32 - ref_loss)) <= 2 * abs(float(trl_loss - ref_loss)) + loss_floor
    assert max_err(grads32, ref_grads) <= 2 * max_err(trl_grads, ref_grads) + 4 * EPS32 * max_abs(ref_grads)


@pytest.mark.parametrize("setting, message", [
    (dict(loss_type="sapo"), "loss_type='sapo'"),
    (dict(loss_type="cispo"), "loss_type='cispo'"),
    (dict(importance_sampling_level="sequence"), "importance_sampling_level='sequence'"),
    (dict(top_entropy_quantile=0.2), "top_entropy_quantile=0.2"),
    (dict(off_policy_mask_threshold=0.5), "off_policy_mask_threshold"),
    (dict(use_adaptive_entropy=True), "use_adaptive_entropy"),
    (dict(delta=1.1, epsilon_high=0.28), r"delta=1.1 < 1 \+ epsilon_high"),
])
def test_settings_it_would_not_reproduce_are_refused(tmp_path, model_dir, tokenizer, setting, message):
    with pytest.raises(NotImplementedError, match=message):
        build(ArpoGRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path, **setting))


def test_multimodal_inputs_are_refused(tmp_path, model_dir, tokenizer):
    trainer = build(ArpoGRPOTrainer, model_dir, tokenizer, grpo_args(tmp_path))
    assert unsupported_settings(trainer) == []
    x = make_inputs(trainer, torch.float32)
    with pytest.raises(NotImplementedError, match="pixel_values"):
        trainer._compute_loss(trainer.model, {**x, "pixel_values": torch.zeros(1, 3, 4, 4)})


def test_readme_snippet_trains(tmp_path, model_dir, tokenizer):
    """The README's TRL snippet, as written, for two steps (generation, scoring with old and ref log-probs
    through the kernels, loss, optimiser step); it logs what GRPOTrainer logs."""
    data = Dataset.from_dict({"prompt": ["a b c", "d e", "f g h i", "j"] * 2})
    args = grpo_args(tmp_path, max_steps=2, beta=0.04, num_iterations=2, learning_rate=1e-3)
    namespace = {"model_path": model_dir, "reward_fn": reward_len, "args": args, "dataset": data,
                 "tokenizer": tokenizer}
    exec(snippet("# TRL"), namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer, ArpoGRPOTrainer) and trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and math.isfinite(h["kl"]) for h in logs)
    plain_args = grpo_args(tmp_path, max_steps=1, beta=0.04, num_iterations=2)
    plain = GRPOTrainer(model=model_dir, reward_funcs=reward_len, args=plain_args, train_dataset=data,
                        processing_class=tokenizer)
    plain.train()
    assert logs[0].keys() == next(h for h in plain.state.log_history if "loss" in h).keys()
