"""One whole training step (rollout + reward + update + weight sync) of `arpo train` vs TRL's `GRPOTrainer`,
side by side in one run, and how the step time scales with M, the response length and the model width.

Same for every row: the model (the demo agent, fp32, CPU, 2 torch threads; a random-initialised wider Qwen2
with the demo agent's vocabulary and chat template in the width curve), the prompts (2 arith + 2 kbqa test
questions with the system prompt our trainer builds; TRL gets the same text), M completions per prompt
(16 unless the curve varies it), at most 256 response tokens, temperature 1, top-p 1, one AdamW step per
rollout batch (lr 1e-6), one PPO epoch, no KL term, the task's own reward.

Not the same, by design: our rows run the tools (the sandboxed python interpreter and kbqa search: a path that
calls a tool pauses, gets the result and goes on), TRL's GRPOTrainer has none (each completion is one HF
`generate` until EOS or the length limit). `arpo-grpo-notools` is our trainer with no tools enabled, the
like-for-like row. TRL runs with gradient checkpointing off (its default is on; ours never recomputes), so
its update is not slowed by recomputation.

Timed: one step at a time, after one untimed warm-up step (its time is `first_step_s`). Our step is
`Trainer.step`; TRL's is one iteration of `Trainer.train`'s loop from `on_step_begin` to `on_step_end` (the
training runs in a thread that a callback holds between steps, so the timer sees exactly one step). Reported:
trajectories/s, and the rollout / update split (TRL's rollout = its `_generate`, which generates and decodes;
its reward and old-log-prob passes fall in the rest) and the tokens generated per trajectory (tool results
not counted).

`make bench` runs it in .venv-peers; without TRL the TRL rows say "not installed: trl". bench/report.py draws
the `step scaling` groups as PNG plots in bench/plots/.
"""
from __future__ import annotations

import functools
import os
import platform
import threading
import time
from pathlib import Path

import pytest
import torch

from arpo.envs.datasets import build_prompt
from arpo.envs.rewards import get_reward_fn
from arpo.envs.tasks import load_task
from peer_rows import import_peer, unavailable

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo-agent"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
PROMPTS_PER_TASK = 2
M, LENGTH, WIDTH = 16, 256, 160  # the main comparison; each curve varies one of them
SYSTEMS = ("arpo-arpo", "arpo-grpo", "arpo-grpo-notools", "trl-grpo")
TRL, TRL_STATUS = import_peer("trl", "trl")


def examples():
    return load_task("arith", "test")[:PROMPTS_PER_TASK] + load_task("kbqa", "test")[:PROMPTS_PER_TASK]


def rows():
    """The prompts as plain QA rows for our trainer (its prompt = the chat template + tool system prompt)."""
    return [{"question": e.question, "answer": list(e.ground_truth), "data_source": e.data_source}
            for e in examples()]


@functools.lru_cache(maxsize=None)
def model_dir(width: int, root: str) -> str:
    """The demo agent (width 160) or a random-initialised Qwen2 `width` wide with its vocabulary and tokenizer."""
    if width == 160:
        return str(DEMO)
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(DEMO)
    cfg.update({"hidden_size": width, "intermediate_size": 3 * width, "num_attention_heads": width // 64,
                "num_key_value_heads": 1, "head_dim": 64})
    torch.manual_seed(0)
    out = Path(root) / f"qwen2-{width}"
    AutoModelForCausalLM.from_config(cfg).float().save_pretrained(out)
    for f in DEMO.iterdir():  # tokenizer and chat template
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return str(out)


# ---- ours ------------------------------------------------------------------------------------------------------
class OurStep:
    """`arpo.Trainer` on the rows; `run()` is one training step; `metrics` its metrics."""

    def __init__(self, system: str, m: int, length: int, model: str, out: Path):
        import arpo

        overrides = {"model.path": model, "rollout.mode": "arpo" if system == "arpo-arpo" else "grpo",
                     "rollout.M": m, "rollout.N": max(m // 2, 1), "rollout.max_response_tokens": length,
                     "train.batch_size": 2 * PROMPTS_PER_TASK, "train.mini_batch_size": 2 * PROMPTS_PER_TASK,
                     "train.total_steps": 1000, "train.lr": 1e-6, "train.output_dir": str(out),
                     "train.eval_every": 0, "train.save_every": 0}
        if system == "arpo-grpo-notools":
            overrides["tools.enabled"] = []
        self.trainer = arpo.Trainer(str(CONFIG), overrides=overrides, train_data=rows(), progress=False)
        self.step_index, self.metrics, self.trajectories = 0, {}, m * 2 * PROMPTS_PER_TASK

    def run(self) -> None:
        self.metrics = self.trainer.step(self.step_index)
        self.step_index += 1

    def split(self) -> dict:
        m = self.metrics
        return {"rollout_s": m["time_rollout"], "update_s": m["time_update"],
                "generated_per_traj": m["generated_tokens"] / self.trajectories}

    def close(self) -> None:
        self.trainer.toolbox.close()


# ---- TRL -------------------------------------------------------------------------------------------------------
class StepGate:
    """Runs a transformers Trainer's `train()` in a thread, one optimizer step per `run()` call: a callback
    holds the loop at each `on_step_begin` until released and signals at `on_step_end`."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.go, self.done, self.error = threading.Semaphore(0), threading.Semaphore(0), None
        gate = self

        class Hold(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                gate.go.acquire()

            def on_step_end(self, args, state, control, **kw):
                gate.done.release()

        trainer.add_callback(Hold())
        self.thread = threading.Thread(target=self._train, args=(trainer,), daemon=True)
        self.thread.start()

    def _train(self, trainer) -> None:
        try:
            trainer.train()
        except BaseException as e:  # re-raised in the caller's thread by run()
            self.error = e
            self.done.release()

    def run(self) -> None:
        self.go.release()
        self.done.acquire()
        if self.error is not None:
            raise self.error


class TrlStep:
    """TRL's GRPOTrainer on the same prompts (as text), M generations each, no tools."""

    def __init__(self, m: int, length: int, model: str, out: Path, steps: int):
        from datasets import Dataset
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        exs = examples()
        prompts = [tok.decode(build_prompt(tok, e, ("python", "search"))) for e in exs]
        data = Dataset.from_dict({"prompt": prompts, "ground_truth": [list(e.ground_truth) for e in exs],
                                  "data_source": [e.data_source for e in exs]})
        args = TRL.GRPOConfig(output_dir=str(out), per_device_train_batch_size=m * len(exs), num_generations=m,
                              max_completion_length=length, max_steps=steps, learning_rate=1e-6,
                              gradient_checkpointing=False, use_cpu=True, bf16=False, report_to=[],
                              save_strategy="no", disable_tqdm=True, logging_steps=10_000, seed=0)
        self.trainer = TRL.GRPOTrainer(model=model, reward_funcs=reward_for_trl, args=args, train_dataset=data,
                                       processing_class=tok)
        self.rollout_s = 0.0
        generate = self.trainer._generate

        def timed(*a, **kw):
            start = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                self.rollout_s += time.perf_counter() - start

        self.trainer._generate = timed
        self.gate = StepGate(self.trainer)
        self.seconds = 0.0

    def run(self) -> None:
        self.rollout_s, start = 0.0, time.perf_counter()
        self.gate.run()
        self.seconds = time.perf_counter() - start

    def split(self) -> dict:
        lengths = self.trainer._metrics["train"].get("completions/mean_length") or [float("nan")]
        return {"rollout_s": self.rollout_s, "update_s": None, "generated_per_traj": lengths[-1]}

    def close(self) -> None:
        pass


def reward_for_trl(prompts, completions, ground_truth, data_source, **kw) -> list[float]:
    return [float(get_reward_fn("auto", src)(c, tuple(gt))) for c, gt, src in zip(completions, ground_truth,
                                                                                   data_source)]


# ---- the benchmark ---------------------------------------------------------------------------------------------
def run_case(benchmark, tmp_path, system: str, m: int, length: int, width: int, rounds: int, group: str,
             x=None) -> None:
    benchmark.group = group
    torch.set_num_threads(2)
    info = {"system": system, "M": m, "max_response_tokens": length, "width": width, "x": x,
            "tools": "none" if system in ("arpo-grpo-notools", "trl-grpo") else "python, search"}
    if system.startswith("trl") and TRL is None:
        unavailable(benchmark, TRL_STATUS)
        benchmark.extra_info.update(info)
        return
    model = model_dir(width, str(tmp_path.parent))
    case = (TrlStep(m, length, model, tmp_path, rounds + 1) if system.startswith("trl")
            else OurStep(system, m, length, model, tmp_path))
    start = time.perf_counter()
    case.run()  # warm-up: first-call set-up (numba, TRL's), untimed
    first = time.perf_counter() - start
    splits = []

    def step():
        case.run()
        splits.append(case.split())

    benchmark.pedantic(step, rounds=rounds, iterations=1)
    case.close()
    trajectories = m * 2 * PROMPTS_PER_TASK
    mean = benchmark.stats.stats.mean
    info.update({"trajectories_per_s": round(trajectories / mean, 2), "first_step_s": round(first, 2),
                 **{k: round(sum(s[k] for s in splits) / len(splits), 3)
                    for k in ("rollout_s", "generated_per_traj")},
                 "rounds": splits,
                 "torch": torch.__version__, "trl": getattr(TRL, "__version__", None),
                 "machine": platform.processor() or platform.machine()})
    if splits[0]["update_s"] is not None:
        info["update_s"] = round(sum(s["update_s"] for s in splits) / len(splits), 3)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("system", SYSTEMS)
def test_step(benchmark, tmp_path, system):
    run_case(benchmark, tmp_path, system, M, LENGTH, WIDTH, rounds=3,
             group=f"whole GRPO/ARPO training step, demo agent, {2 * PROMPTS_PER_TASK} prompts x M={M}, "
                   f"{LENGTH} tokens: ours vs TRL")


CURVES = {"M": (8, 16, 32), "max_response_tokens": (64, 128, 256), "width": (160, 384, 768)}
SCALED = ("arpo-grpo", "trl-grpo")


@pytest.mark.skipif(os.environ.get("ARPO_BENCH_SMALL") == "1", reason="scaling curves: full runs only")
@pytest.mark.parametrize("system", SCALED)
@pytest.mark.parametrize("curve, value", [(c, v) for c, vs in CURVES.items() for v in vs])
def test_step_scaling(benchmark, tmp_path, curve, value, system):
    m, length, width = (value if curve == "M" else M, value if curve == "max_response_tokens" else LENGTH,
                        value if curve == "width" else WIDTH)
    run_case(benchmark, tmp_path, system, m, length, width, rounds=1, group=f"step scaling: {curve}", x=value)
