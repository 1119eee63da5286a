"""``arpo train``: the ARPO / GRPO training loop.

One step: the step's prompts → rollouts (ARPO or GRPO sampler, tools) → leaf rewards → leaf advantages (the
``algo.estimator`` over the whole step's batch) → flat or tree-packed micro-batches (``algo.credit``: soft or hard)
→ old/reference log-probs → PPO epochs over mini-batches → new weights to the rollout engine → metrics;
evaluation and checkpoints every K steps.

Everything random in a step is seeded from (train.seed, step, rank): the prompts (``data.step_prompts``), the
sampler (each engine request carries a seed drawn from it) and the mini-batch order. So a run resumed from a
checkpoint repeats exactly the steps an uninterrupted run would have taken.

SIGINT / SIGTERM: the current step finishes, a checkpoint is written and ``train`` returns 0; a second signal
interrupts at once (KeyboardInterrupt), leaving only complete checkpoints behind.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arpo_kernels import warm_up as warm_up_kernels

from ..algos.advantages import get_estimator
from ..config import ARPOConfig, ConfigError, as_config, config_to_dict, dump_yaml
from ..envs import rewards as rewards_mod
from ..envs.datasets import dataset_entries, load_rows, write_jsonl
from ..evaluate import evaluate
from ..models import add_lora, load_causal_lm, load_lora_adapter, load_tokenizer, lora_disabled, pick_device
from ..rollout.sampler import Rollout, Sampler
from ..tools.toolbox import make_toolbox
from . import checkpoint as ckpt
from .data import load_prompts, step_prompts
from .dist import Dist, launched_ranks, set_deterministic
from .microbatch import micro_batches
from .optim import TorchBackend
from .policy import PolicyLogprobs, enable_activation_checkpointing
from .tracking import MetricsLogger, summary_line
from .update import attach_old_logprobs, ppo_update


def step_seed(seed: int, step: int, rank: int, purpose: int = 0) -> int:
    """A 63-bit seed for (run seed, step, rank, purpose)."""
    return int(np.random.SeedSequence([seed, step, rank, purpose]).generate_state(2, np.uint64)[0] >> 1)


class Trainer:
    """An ARPO / GRPO training run: set it up, then ``train()``.

    ``config``: an ``ARPOConfig``, a ``{section: {field: value}}`` dict, a YAML path or None (defaults), then
    ``overrides`` (``["rollout.M=8"]`` or ``{"rollout.M": 8}``); see ``arpo.config.as_config``.
    ``tools``: user tools beside ``tools.enabled`` / ``tools.custom``: name -> callable ``(query: str) -> str |
    ToolResult`` (its docstring or ``description`` is what the model reads; see ``arpo.tools.custom``).
    ``reward``: a callable ``(response, ground_truth[, example]) -> float in [0, 1]`` used instead of
    ``data.reward``. ``train_data`` / ``test_data``: used instead of ``data.train`` / ``data.test``: dataset files
    or embedded task names (a path or a list), or rows (a list of dicts or a Hugging Face ``datasets.Dataset``;
    ``{question, answer}`` or ARPO rows), which are written to ``train.output_dir/data/{train,test}.jsonl`` so that
    the run's config.yaml names what it trained on.
    ``resume``: a checkpoint directory, or "latest" for the newest intact one in train.output_dir.
    ``progress``: tqdm bars (None: only on a terminal).

    After ``train()``: ``final_step``, ``interrupted``, ``last_metrics`` (the last step's metrics) and ``run_dir``.
    """

    def __init__(self, config: ARPOConfig | dict | str | Path | None = None, *,
                 overrides: Sequence[str] | dict[str, Any] = (), tools: Mapping[str, Callable] | None = None,
                 reward: Callable | None = None, train_data: Iterable | None = None, test_data: Iterable | None = None,
                 resume: str | None = None, progress: bool | None = None):
        cfg = as_config(config, overrides)
        if reward is not None:
            cfg = _with_reward_name(cfg, reward)
        self.cfg = cfg
        self.reward = cfg.data.reward if reward is None else reward
        self.progress = progress
        self.dist = self._init_dist()
        self.run_dir = Path(cfg.train.output_dir)
        checkpoint = self._resume_path(resume)
        if train_data is not None or test_data is not None:
            self.cfg = cfg = self._in_memory_data(train_data, test_data)
        self.deterministic = set_deterministic(cfg.train.deterministic, self.dist.device)
        torch.manual_seed(cfg.train.seed)
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        state = ckpt.load_state(checkpoint) if checkpoint else None
        if state is not None:
            self._check_resume_lora(checkpoint, state)
        lora = cfg.model.lora_r > 0  # LoRA: the base from model.path, the adapter from the checkpoint
        model = load_causal_lm(str(checkpoint / "policy") if checkpoint and not lora else cfg.model.path,
                               device=self.dist.device)
        self.engine = self._make_engine(model)  # before LoRA and gradient checkpointing: a plain copy
        if lora:
            self._add_lora(model, checkpoint, state)
        if cfg.train.grad_checkpointing:
            enable_activation_checkpointing(model)
        self.opt = self._make_backend(PolicyLogprobs(model, temperature=cfg.rollout.temperature,
                                                     backend=cfg.train.kernel_backend))
        self.ref = self._make_reference()
        self.toolbox = make_toolbox(cfg.tools, cfg.rollout.max_tool_calls, extra=tools)
        self.toolbox.call_format(self.tokenizer)  # tools.format json: a template without tools or a tool role fails now
        specs = self.toolbox.specs
        self.train_prompts = load_prompts(cfg, self.tokenizer, "train", tools=specs, no_bar=self._no_bars)
        self.test_prompts = (load_prompts(cfg, self.tokenizer, "test", tools=specs, limit=cfg.train.eval_limit,
                                          no_bar=self._no_bars) if cfg.train.eval_every > 0 else [])
        self.start_step = self._restore(checkpoint, state) if checkpoint else 0
        self.logger = None
        if self.dist.is_main:
            self._write_run_config()
            self.logger = MetricsLogger(self.run_dir, cfg.train.loggers, config_to_dict(cfg),
                                        resume_step=self.start_step if checkpoint else None)
        self._stop: int | None = None
        self.final_step = self.start_step  # the last step trained (and checkpointed) by train()
        self.interrupted = False  # train() stopped early on SIGINT/SIGTERM
        self.last_metrics: dict = {}  # the metrics of the last step train() ran
        if self._uses_math_reward():
            rewards_mod.warm_up()  # start the math-verify workers now, not inside the first step's timing
        # the kernels' one-time costs (numba's cache and threads: ~3 s on CPU; Triton's compiles) now, not in step 1
        warm_up_kernels(cfg.train.kernel_backend, torch.bfloat16 if cfg.train.bf16 else torch.float32,
                        self.dist.device, cfg.algo.kl_type, with_kl=cfg.algo.kl_coef > 0)

    # ------------------------------------------------------------------------------------------ set-up
    @property
    def _no_bars(self) -> bool | None:
        """tqdm's ``disable``: bars on rank 0 only; progress=None shows them only on a terminal."""
        if not self.dist.is_main or self.progress is False:
            return True
        return None if self.progress is None else False

    def _uses_math_reward(self) -> bool:
        if self.reward != "auto":
            return self.reward == "math"
        sources = {p.example.data_source for p in self.train_prompts + self.test_prompts}
        return any(rewards_mod.auto_reward_name(s) == "math" for s in sources)

    def _in_memory_data(self, train_data, test_data) -> ARPOConfig:
        """The config with data.train / data.test replaced: a file path or task name (or a list of them) as it is,
        rows written to run_dir/data/{split}.jsonl (by rank 0) and named."""
        data = self.cfg.data
        for split, given in (("train", train_data), ("test", test_data)):
            if given is None:
                continue
            entries = dataset_entries(given)
            if entries is None:
                examples = load_rows(given, f"{split}_data")
                path = self.run_dir / "data" / f"{split}.jsonl"
                self.dist.on_main(lambda: str(write_jsonl(examples, path)))
                entries = [str(path)]
            data = dataclasses.replace(data, **{split: entries})
        return dataclasses.replace(self.cfg, data=data)

    def _init_dist(self) -> Dist:
        rank, world, local = launched_ranks()
        if self.cfg.train.deepspeed:
            from .deepspeed_backend import init_deepspeed_dist

            return init_deepspeed_dist(self.cfg, rank, world, local)
        if world > 1:
            raise ConfigError(f"train.deepspeed: launched with WORLD_SIZE={world}, but data parallelism needs "
                              "train.deepspeed = true (or --deepspeed)")
        return Dist(device=pick_device(local))

    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            if self.dist.is_main and (ckpt.latest_checkpoint(self.run_dir) or (self.run_dir / "metrics.jsonl").exists()):
                raise ConfigError(f"train.output_dir: {self.run_dir} already holds a run (checkpoints or "
                                  "metrics.jsonl); pass --resume to continue it or choose another output_dir")
            return None

        def intact() -> Path:  # "latest": the newest intact checkpoint; a named one: that one, intact or an error
            if resume == "latest":
                return ckpt.resume_latest(self.run_dir)
            ckpt.verify(resume)
            return Path(resume)

        return self.dist.on_main(intact)  # rank 0 reads every byte (and sets damaged checkpoints aside) once

    def _make_backend(self, policy: PolicyLogprobs):
        if self.cfg.train.bf16 and self.dist.device.type != "cuda":
            raise ConfigError("train.bf16: bf16 mixed precision needs a CUDA device; this run is on the CPU")
        if self.cfg.train.deepspeed:
            from .deepspeed_backend import DeepSpeedBackend

            return DeepSpeedBackend(policy, self.cfg, self.dist)
        return TorchBackend(policy, self.cfg.train, self.dist.device)

    def _check_resume_lora(self, checkpoint: Path, state: dict) -> None:
        """A checkpoint resumes only with the LoRA settings it was trained with (none: full fine-tuning)."""
        saved, m = state["config"].get("model", {}), self.cfg.model
        keys = ("lora_r", "lora_alpha", "lora_targets") if m.lora_r > 0 else ("lora_r",)
        for key in keys:
            was, now = saved.get(key, 0 if key == "lora_r" else None), getattr(m, key)
            if was != now:
                raise ConfigError(f"model.{key}: checkpoint {checkpoint.name} was trained with model.{key} = "
                                  f"{was!r}; got {now!r} (resume with the settings it was trained with)")

    def _add_lora(self, model, checkpoint: Path | None, state: dict | None) -> None:
        """Adapters into ``model`` (only they train); when resuming, their weights from the checkpoint, over the
        same base model (checked by fingerprint), and the merged weights to the engine."""
        m = self.cfg.model
        base_print = ckpt.fingerprint(model)
        add_lora(model, r=m.lora_r, alpha=m.lora_alpha, targets=m.lora_targets, dropout=m.lora_dropout,
                 base_path=m.path)
        self._base_fingerprint = base_print
        if checkpoint is None:
            return
        if state.get("base_fingerprint") != base_print:
            raise ValueError(f"model.path {m.path!r} differs from the base model checkpoint {checkpoint} was "
                             "trained on (weight fingerprints differ); its adapter only fits that base")
        load_lora_adapter(model, checkpoint / ckpt.ADAPTER_DIR)
        self.engine.update_weights(model)

    def _make_reference(self) -> PolicyLogprobs | None:
        """The frozen reference model of the KL term: model.ref_path, else a copy of model.path; None without
        the KL term, or with LoRA and no ref_path: then the reference is the policy with its adapters off."""
        if self.cfg.algo.kl_coef == 0.0 or (self.cfg.model.lora_r > 0 and self.cfg.model.ref_path is None):
            return None
        ref = load_causal_lm(self.cfg.model.ref_path or self.cfg.model.path, device=self.dist.device)
        ref.requires_grad_(False)
        return PolicyLogprobs(ref.eval(), temperature=self.cfg.rollout.temperature,
                              backend=self.cfg.train.kernel_backend)

    def _make_engine(self, model):
        r, m = self.cfg.rollout, self.cfg.model
        if r.engine == "sglang":
            from ..engines.sglang import SGLangEngine

            engine = SGLangEngine(m.path, top_logprobs=r.sglang_top_logprobs, weight_sync=r.weight_sync)
            engine.update_weights(model)
            return engine
        from ..engines.hf import HFEngine

        dtype = getattr(torch, m.dtype)
        copy_ = copy.deepcopy(model).to(dtype=dtype).eval().requires_grad_(False)
        return HFEngine(copy_, self.tokenizer, token_budget=r.token_budget, share_prefix=r.share_prefix,
                        seed=self.cfg.train.seed)

    def _restore(self, checkpoint: Path, state: dict) -> int:
        self.opt.load_checkpoint(checkpoint, state)
        ckpt.set_rng_state(state["rng"][self.dist.rank] if self.dist.rank < len(state["rng"]) else state["rng"][0])
        return int(state["step"])

    def _write_run_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / "config.yaml.tmp"
        tmp.write_text(dump_yaml(self.cfg), encoding="utf-8")
        os.replace(tmp, self.run_dir / "config.yaml")

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> int:
        """Run from the start (or resumed) step to train.total_steps; returns the process exit code (0). A signal
        stops it early: ``interrupted`` is then True and ``final_step`` says where (it is checkpointed)."""
        t = self.cfg.train
        bar = tqdm(total=t.total_steps, initial=self.start_step, desc="train", unit="step", disable=self._no_bars)
        with self._signals():
            if self.start_step == 0 and t.eval_every > 0:
                self._log({"step": 0, **self._evaluate(0)})
            step = self.start_step
            while step < t.total_steps:
                metrics = self.step(step)
                step += 1
                self.final_step = step
                if t.eval_every > 0 and (step % t.eval_every == 0 or step == t.total_steps):
                    metrics.update(self._evaluate(step))
                self._log(metrics)
                self.last_metrics = metrics
                bar.update(1)
                stop = self.dist.any(self._stop is not None)
                if stop or step == t.total_steps or (t.save_every > 0 and step % t.save_every == 0):
                    self.save(step)
                if stop:
                    self.interrupted = True
                    self._say(f"stopped by signal after step {step}; resume with --resume")
                    break
        bar.close()
        self.toolbox.close()
        if self.logger is not None:
            self.logger.close()
        return 0

    def step(self, step: int) -> dict:
        """One training step (0-based ``step``); returns its metrics (``step`` = step + 1)."""
        cfg, times = self.cfg, {}
        clock = time.perf_counter()
        prompts = step_prompts(self.train_prompts, step, cfg.train.batch_size, cfg.train.seed, self.dist.rank,
                               self.dist.world)
        rollouts, roll_metrics = self._rollout(prompts, step)
        times["rollout"], clock = time.perf_counter() - clock, time.perf_counter()
        reward_metrics = self._score(prompts, rollouts)
        times["reward"], clock = time.perf_counter() - clock, time.perf_counter()
        upd = self._update([r.tree for r in rollouts], step)
        times["update"], clock = time.perf_counter() - clock, time.perf_counter()
        with self.opt.full_weights() as model:
            self.engine.update_weights(model)
        times["sync"] = time.perf_counter() - clock
        out = {**roll_metrics, **reward_metrics, **upd}
        out.update({f"time_{k}": v for k, v in times.items()}, time_step=sum(times.values()))
        out["train_tokens_per_s"] = out["update_tokens"] / max(times["update"], 1e-9)
        out = self.dist.mean(out)
        out["lr"] = self.opt.lr
        self.opt.schedule_step()
        return {"step": step + 1, **out}

    def _rollout(self, prompts, step: int) -> tuple[list[Rollout], dict]:
        sampler = Sampler(self.engine, self.toolbox, self.tokenizer, self.cfg.rollout,
                          seed=step_seed(self.cfg.train.seed, step, self.dist.rank), deterministic=self.deterministic)
        total = len(prompts) * self.cfg.rollout.M
        with tqdm(total=total, desc="rollout", unit="traj", leave=False, disable=self._no_bars) as bar:
            rollouts = sampler.rollout([list(p.ids) for p in prompts], progress=bar.update)
        m = dict(sampler.last_metrics)
        finishes = [leaf.finish for r in rollouts for leaf in r.leaves]
        for kind in ("answer", "eos", "length", "tool_limit", "stop"):
            m[f"finish_{kind}"] = finishes.count(kind) / max(len(finishes), 1)
        m["rollout_seconds"] = m.pop("seconds")
        return rollouts, m

    def _score(self, prompts, rollouts: list[Rollout]) -> dict:
        """Leaf rewards into the trees. ``zero_adv_groups``: the fraction of prompts whose M rewards are all
        equal (their group baseline leaves no learning signal)."""
        rewards, flat_groups = [], 0
        groups = rewards_mod.score_rollouts(self.reward, [p.example for p in prompts], rollouts,
                                            random_p=self.cfg.data.random_reward_p, seed=self.cfg.train.seed)
        for r, group in zip(rollouts, groups):
            for leaf, value in zip(r.leaves, group):
                r.tree.set_reward(leaf.node, value)
            rewards += group
            flat_groups += max(group) == min(group)
        response = [sum(len(r.tree.tokens(v)) for v in r.tree.path(leaf.node)[1:]) for r in rollouts
                    for leaf in r.leaves]
        arr = np.asarray(rewards)
        return {"reward_mean": float(arr.mean()), "reward_std": float(arr.std()),
                "accuracy": float((arr >= 1.0).mean()), "response_tokens_mean": float(np.mean(response)),
                "zero_adv_groups": flat_groups / max(len(rollouts), 1)}

    def _leaf_advantages(self, trees: list) -> list[np.ndarray]:
        """The estimator over the whole step's batch: every rank's leaf rewards (gathered under data parallelism,
        so that batch-level estimators see what one process would), then this rank's share of the result."""
        ranks = self._gather([t.leaf_rewards() for t in trees])
        adv = get_estimator(self.cfg.algo.estimator)([r for rank in ranks for r in rank], eps=self.cfg.algo.eps)
        start = sum(len(rank) for rank in ranks[:self.dist.rank])
        return adv[start:start + len(trees)]

    def _update(self, trees: list, step: int) -> dict:
        cfg = self.cfg
        adv = self._leaf_advantages(trees)
        per_mini = cfg.train.mini_batch_size // self.dist.world
        starts = range(0, len(trees), per_mini)
        batches = [micro_batches(trees[i:i + per_mini], adv[i:i + per_mini], update=cfg.train.update,
                                 credit=cfg.algo.credit, agg=cfg.algo.agg, max_tokens=cfg.train.micro_batch_tokens,
                                 pad_id=self.pad_id, whole_trees=self.opt.policy.block_sparse) for i in starts]
        batches = self.opt.align_micro_batches(batches)
        forwarded = attach_old_logprobs(lambda mb: self.opt.forward(mb, train=False), batches, cfg.algo,
                                        self._ref_forward if cfg.algo.kl_coef > 0 else None,
                                        epochs=cfg.train.ppo_epochs)
        total = sum(len(b) for b in batches) * cfg.train.ppo_epochs
        with tqdm(total=total, desc="update", unit="micro", leave=False, disable=self._no_bars) as bar:
            metrics, fwd = ppo_update(self.opt, batches, cfg.algo, cfg.train.ppo_epochs,
                                      np.random.default_rng(step_seed(cfg.train.seed, step, self.dist.rank, 1)),
                                      on_micro=lambda: bar.update(1))
        unique = sum(t.num_tokens(unique=True) for t in trees)
        flat = sum(t.num_tokens(unique=False) for t in trees)
        metrics.update(update_tokens=float(forwarded + fwd), unique_tokens=float(unique), flat_tokens=float(flat),
                       sharing_ratio=flat / max(unique, 1), micro_batches=float(sum(len(b) for b in batches)))
        metrics["clip_frac"] = metrics.get("clip_frac_high", 0.0) + metrics.get("clip_frac_low", 0.0)
        return metrics

    @torch.no_grad()
    def _ref_forward(self, mb) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ref is None:  # LoRA: the base model is the policy with its adapters off
            with lora_disabled(self.opt.model):
                return self.opt.forward(mb, train=False)
        return self.ref(mb.to(self.dist.device))

    def _evaluate(self, step: int) -> dict:
        """Greedy evaluation on data.test (rank 0; the others wait); per-sample transcripts in eval/."""
        out: dict = {}
        if self.dist.is_main:
            with tqdm(total=len(self.test_prompts), desc=f"eval @ {step}", unit="q", leave=False,
                      disable=self._no_bars) as bar:
                summary, records = evaluate(self.engine, self.toolbox, self.tokenizer, self.test_prompts,
                                            self.cfg.rollout, self.reward, seed=self.cfg.train.seed,
                                            progress=bar.update)
            _write_jsonl(self.run_dir / "eval" / f"step_{step:06d}.jsonl", records)
            out = {f"eval_{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
            for source, s in summary["by_source"].items():
                out[f"eval_{source}_accuracy"] = s["accuracy"]
        self.dist.barrier()
        return out

    # ------------------------------------------------------------------------------------------ output
    def save(self, step: int) -> Path:
        """Write the checkpoint of ``step`` (atomically; all ranks take part under DeepSpeed)."""
        state = {"step": step, "rng": self._gather(ckpt.rng_state()), "config": config_to_dict(self.cfg)}
        if self.cfg.model.lora_r > 0:  # the adapter fits only this base model: resume checks it
            state["base_fingerprint"] = self._base_fingerprint
        if self.dist.active:  # data parallel: every rank must hold the same weights; record what each holds
            with self.opt.full_weights() as model:
                prints = self._gather(ckpt.fingerprint(model))
            state["weight_fingerprints"] = prints
            if any(p != prints[0] for p in prints):
                self._say(f"WARNING: the ranks' weights differ at step {step} (fingerprints in the checkpoint)")
        final = ckpt.checkpoint_dir(self.run_dir, step)
        if final.exists():  # every rank looks before any of them can have written it (barriers below)
            return final
        tmp = ckpt.prepare_tmp(self.run_dir, step) if self.dist.is_main else ckpt.tmp_dir(self.run_dir, step)
        self.dist.barrier()
        self.opt.save_checkpoint(tmp, state, self.tokenizer)  # every rank: DeepSpeed writes its partitions
        self.dist.barrier()
        if self.dist.is_main:
            (tmp / "config.yaml").write_text(dump_yaml(self.cfg), encoding="utf-8")
            ckpt.commit_tmp(tmp, final, self.cfg.train.keep_checkpoints)
            self._say(f"checkpoint: {final}")
        self.dist.barrier()
        return final

    def _gather(self, obj) -> list:
        """``obj`` of every rank, in rank order."""
        if not self.dist.active:
            return [obj]
        out = [None] * self.dist.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def _log(self, metrics: dict) -> None:
        if self.logger is None:
            return
        self.logger.log(metrics)
        if metrics["step"] > 0 and "reward_mean" in metrics:
            self._say(summary_line(metrics, self.cfg.train.total_steps))
        elif "eval_accuracy" in metrics:
            self._say(f"eval @ step {metrics['step']}: accuracy {metrics['eval_accuracy']:.3f}, "
                      f"tool calls {metrics['eval_tool_calls']:.2f}")

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text, file=sys.stderr)

    @contextlib.contextmanager
    def _signals(self):
        """First SIGINT/SIGTERM: finish the step, checkpoint, stop. Second: interrupt now."""
        def handler(signum, frame):
            if self._stop is not None:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._stop = signum
            self._say(f"received {signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                      "(send it again to stop at once)")

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _with_reward_name(cfg: ARPOConfig, reward: Callable) -> ARPOConfig:
    """``cfg`` whose data.reward names ``reward`` when it has an import path (so config.yaml says what scored the
    run); a lambda or a nested function has none, and config.yaml then keeps data.reward with a warning."""
    path = f"{getattr(reward, '__module__', '')}:{getattr(reward, '__qualname__', '')}"
    if not callable(reward):
        raise ConfigError(f"reward: expected a callable (response, ground_truth[, example]) -> float, "
                          f"got {type(reward).__name__}")
    try:
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, reward=path))
    except ConfigError:
        warnings.warn(f"reward {path!r} has no import path; config.yaml records data.reward = "
                      f"{cfg.data.reward!r}, which is not what scores this run", stacklevel=3)
        return cfg


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def run_training(cfg: ARPOConfig, *, resume: str | None = None) -> int:
    """The body of ``arpo train``."""
    return Trainer(cfg, resume=resume).train()
