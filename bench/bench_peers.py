"""TRL's and verl's own steps with and without the arpo kernels, side by side in one run (CPU, fp32). Needs TRL
and verl: `make bench-peers` runs it in .venv-peers (in .venv, `make bench` skips it).

- verl: its policy loss as verl's actor calls it (``get_policy_loss_fn(name)(...)``, forward + backward) on
  B x L = 256 x 4096 tokens, seq-mean-token-mean with rollout importance weights: verl's ``vanilla`` (torch
  eager) vs ``arpo_vanilla`` (the fused numba kernel).
- TRL, loss step: ``GRPOTrainer._compute_loss`` + backward on one batch (8 completions x 64 tokens after
  32-token prompts; log-probs from the model included) vs ``ArpoGRPOTrainer``'s; a random-initialised Qwen2 with
  Qwen2.5's vocabulary (V = 151,936, tied embeddings, hidden 256, 2 layers), so the LM head dominates as in
  small LLMs.
- TRL, training step (only with ARPO_BENCH_TRAIN_STEP=1: minutes on 2 cores, mostly HF generation, which the
  kernels do not touch): ``trainer.train()`` for one step of TRL's defaults (loss_type dapo, beta 0, one
  iteration: no old/ref log-prob pass): generating the 8 completions of 64 tokens, the loss step, AdamW;
  GRPOTrainer vs ArpoGRPOTrainer.

On a shared machine compare each group's Min (its least disturbed round) as well as its Mean.

ARPO_BENCH_SMALL=1 shrinks the shapes.
"""
import os
import platform

import pytest

trl = pytest.importorskip("trl", reason="needs TRL and verl: make bench-peers runs this in .venv-peers")
verl = pytest.importorskip("verl", reason="needs TRL and verl: make bench-peers runs this in .venv-peers")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

from arpo_kernels.integrations.trl import ArpoGRPOTrainer  # noqa: E402
from arpo_kernels.integrations.verl import LOSS_NAME  # noqa: E402

SMALL = os.environ.get("ARPO_BENCH_SMALL") == "1"
ROWS, LENGTH = (16, 1024) if SMALL else (256, 4096)  # verl policy loss: [B, L]
VOCAB = 32768 if SMALL else 151936
GROUP, PROMPT, COMPLETION = 8, 32, (16 if SMALL else 64)  # TRL: completions per step, tokens


def info(benchmark, **extra):
    benchmark.extra_info.update(extra)
    benchmark.extra_info.update({"torch": torch.__version__, "trl": trl.__version__, "verl": verl.__version__,
                                 "python": platform.python_version(),
                                 "device": platform.processor() or platform.machine()})


# ---- verl: the policy loss -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def verl_batch():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(ROWS, LENGTH, generator=g) * 3
    lengths = torch.randint(LENGTH // 4, LENGTH + 1, (ROWS,), generator=g)
    return {"old_log_prob": lp + torch.randn(ROWS, LENGTH, generator=g) * 0.2, "log_prob": lp,
            "advantages": torch.randn(ROWS, 1, generator=g).expand(ROWS, LENGTH).contiguous(),
            "response_mask": torch.arange(LENGTH) < lengths[:, None],
            "rollout_is_weights": torch.rand(ROWS, LENGTH, generator=g) * 2}


@pytest.mark.parametrize("loss_mode", ["vanilla", LOSS_NAME])
def test_verl_policy_loss(benchmark, verl_batch, loss_mode):
    benchmark.group = f"verl policy loss fwd+bwd, {ROWS}x{LENGTH} tokens, fp32"
    config = ActorConfig(strategy="fsdp", rollout_n=8, ppo_micro_batch_size_per_gpu=8, clip_ratio_high=0.28)
    loss_fn = get_policy_loss_fn(loss_mode)

    def step():
        lp = verl_batch["log_prob"].detach().requires_grad_()
        loss, _ = loss_fn(**{**verl_batch, "log_prob": lp}, loss_agg_mode="seq-mean-token-mean", config=config)
        loss.backward()

    step()
    benchmark.pedantic(step, rounds=7, warmup_rounds=1)
    info(benchmark, tokens=ROWS * LENGTH, tokens_per_s=round(ROWS * LENGTH / benchmark.stats.stats.mean))


# ---- TRL: the loss step and a training step ------------------------------------------------------------------
def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A tokenizer for every id of the model: words "t0".."t{V-4}" split on spaces, then <unk>, <pad>, <eos>."""
    words = {f"t{i}": i for i in range(vocab - 3)} | {"<unk>": vocab - 3, "<pad>": vocab - 2, "<eos>": vocab - 1}
    tk = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.WhitespaceSplit(), decoders.WordPiece(cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    """(model directory, tokenizer): the tokenizer travels as an object (loaded from the directory,
    transformers would rebuild it as Qwen2's BPE tokenizer)."""
    tokenizer = word_tokenizer(VOCAB)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         initializer_range=0.1, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path), tokenizer


def trainer(cls, llm, max_steps=1):
    model_dir, tokenizer = llm
    args = GRPOConfig(output_dir=os.path.join(model_dir, "out"), per_device_train_batch_size=GROUP,
                      num_generations=GROUP, max_completion_length=COMPLETION, max_steps=max_steps, use_cpu=True,
                      bf16=False, report_to=[], save_strategy="no", disable_tqdm=True, seed=0)
    data = Dataset.from_dict({"prompt": [" ".join(f"t{i}" for i in range(PROMPT))] * GROUP})
    return cls(model=model_dir, reward_funcs=lambda completions, **kw: [len(c) / 100 for c in completions],
               args=args, train_dataset=data, processing_class=tokenizer)


TRAINERS = {"GRPOTrainer": GRPOTrainer, "ArpoGRPOTrainer": ArpoGRPOTrainer}


@pytest.mark.parametrize("name", TRAINERS)
def test_trl_loss_step(benchmark, llm, name):
    benchmark.group = f"TRL GRPO loss fwd+bwd, {GROUP}x{COMPLETION} completion tokens, Qwen2 V={VOCAB} H=256"
    t = trainer(TRAINERS[name], llm)
    t.model.train()
    t.current_gradient_accumulation_steps = 1
    g = torch.Generator().manual_seed(0)
    inputs = {"prompt_ids": torch.randint(0, VOCAB - 3, (GROUP, PROMPT), generator=g),
              "prompt_mask": torch.ones(GROUP, PROMPT, dtype=torch.long),
              "completion_ids": torch.randint(0, VOCAB - 3, (GROUP, COMPLETION), generator=g),
              "completion_mask": torch.ones(GROUP, COMPLETION, dtype=torch.long),
              "advantages": torch.randn(GROUP, generator=g),
              "num_items_in_batch": torch.tensor(float(GROUP * COMPLETION))}

    def step():
        t.model.zero_grad(set_to_none=True)
        t._compute_loss(t.model, inputs).backward()

    step()
    benchmark.pedantic(step, rounds=3, warmup_rounds=0)
    tokens = GROUP * COMPLETION
    info(benchmark, tokens=tokens, trained_tokens_per_s=round(tokens / benchmark.stats.stats.mean))


@pytest.mark.skipif(os.environ.get("ARPO_BENCH_TRAIN_STEP") != "1",
                    reason="minutes of HF generation on 2 cores: set ARPO_BENCH_TRAIN_STEP=1")
@pytest.mark.parametrize("name", TRAINERS)
def test_trl_training_step(benchmark, llm, name):
    benchmark.group = (f"TRL GRPO training step (generate {GROUP}x{COMPLETION}, loss, AdamW), "
                       f"Qwen2 V={VOCAB} H=256")
    trainer(TRAINERS[name], llm).train()  # warm-up: numba's kernels, TRL's first-call set-up

    def setup():
        return (trainer(TRAINERS[name], llm),), {}

    benchmark.pedantic(lambda t: t.train(), setup=setup, rounds=2)
    info(benchmark, completion_tokens=GROUP * COMPLETION)
