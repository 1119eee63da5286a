"""The training loop end to end on the demo agent (CPU): metrics, checkpoints, exact resume, signals, plots,
bad input."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arpo.config import ConfigError, load_config
from arpo.train import checkpoint as ckpt
from arpo.train.trainer import Trainer
from arpo.train.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[2]
TINY = [  # 2 arith prompts x 4 trajectories per step, python only: a step takes a few seconds
    "data.train=[arith]", "data.test=[arith]", "data.max_prompt_tokens=200", "tools.enabled=[python]",
    "rollout.M=4", "rollout.N=2", "rollout.max_response_tokens=96", "rollout.token_budget=4096",
    "train.batch_size=2", "train.mini_batch_size=1", "train.micro_batch_tokens=1024", "train.lr=1e-3",
    "train.warmup_steps=1", "train.schedule=constant", "train.eval_every=0", "train.save_every=2",
    "train.update=packed", "train.keep_checkpoints=0",
]


def tiny(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "demo.yaml", [*TINY, f"train.output_dir={out}", *extra])


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "policy" / "model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 steps in one go, with evaluation (2 test prompts) and TensorBoard."""
    out = tmp_path_factory.mktemp("straight")
    cfg = tiny(out, "train.total_steps=4", "train.eval_every=2", "train.eval_limit=2",
               "train.loggers=[tensorboard]")
    assert Trainer(cfg, progress=False).train() == 0
    return out


def test_metrics_and_checkpoints(straight):
    records = read_metrics(straight)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]  # step 0: the evaluation before training
    assert set(records[0]) >= {"eval_accuracy", "eval_tool_calls", "eval_arith_accuracy"}
    for r in records[1:]:
        for key in ("reward_mean", "accuracy", "tool_calls_on_path_per_traj", "tool_executions_per_traj", "branches",
                    "zero_adv_groups", "entropy_mean", "clip_frac_high",
                    "approx_kl", "grad_norm", "gen_tokens_per_s", "train_tokens_per_s", "prefix_reuse",
                    "time_rollout", "time_update", "lr", "unique_tokens", "flat_tokens"):
            assert key in r, key
        assert r["unique_tokens"] <= r["flat_tokens"]
        assert 0.0 <= r["accuracy"] <= 1.0
    assert "eval_accuracy" in records[2] and "eval_accuracy" in records[4] and "eval_accuracy" not in records[1]
    assert [p.name for p in sorted((straight / "checkpoints").iterdir())] == ["step_000002", "step_000004"]
    assert (straight / "eval" / "step_000004.jsonl").exists()
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))
    # the checkpoint's policy is a plain transformers model directory
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(straight / "checkpoints" / "step_000004" / "policy")
    AutoTokenizer.from_pretrained(straight / "checkpoints" / "step_000004" / "policy")


def test_training_changes_the_weights(straight):
    first, last = weights(straight / "checkpoints" / "step_000002"), weights(straight / "checkpoints" / "step_000004")
    start = load_file(ROOT / "assets" / "demo-agent" / "model.safetensors")
    moved = [k for k in start if not torch.equal(start[k], last[k])]
    assert moved, "four steps at lr 1e-3 left every weight unchanged"
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_resume_is_exact(straight, tmp_path):
    """2 steps, then --resume for 2 more == 4 steps straight (same seed)."""
    out = tmp_path / "resumed"
    assert Trainer(tiny(out, "train.total_steps=2"), progress=False).train() == 0
    assert Trainer(tiny(out, "train.total_steps=4"), resume="latest", progress=False).train() == 0
    a = weights(straight / "checkpoints" / "step_000004")
    b = weights(out / "checkpoints" / "step_000004")
    for k in a:  # CPU math is deterministic for identical inputs; float sums over batches make 1e-7 noise at most
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    ra = {r["step"]: r for r in read_metrics(straight) if r["step"] > 0}
    rb = {r["step"]: r for r in read_metrics(out)}
    assert sorted(rb) == [1, 2, 3, 4]
    for s in rb:
        assert rb[s]["reward_mean"] == ra[s]["reward_mean"] and rb[s]["generated_tokens"] == ra[s]["generated_tokens"]


def test_resume_skips_a_damaged_checkpoint(straight, tmp_path):
    """The newest checkpoint overwritten with random bytes, then truncated: --resume continues from the one
    before (and trains exactly what the straight run did); naming the damaged one is a clear error."""
    out = tmp_path / "run"
    assert Trainer(tiny(out, "train.total_steps=2", "train.save_every=1"), progress=False).train() == 0
    damaged = ckpt.checkpoint_dir(out, 2)
    for file in ("trainer_state.pt", "policy/model.safetensors"):
        path = damaged / file
        data = path.read_bytes()
        path.write_bytes(os.urandom(len(data)) if file == "trainer_state.pt" else data[: len(data) // 2])
        with pytest.raises(ckpt.DamagedCheckpoint, match=re.escape(str(path))):
            Trainer(tiny(out, "train.total_steps=2"), resume=str(damaged), progress=False)
        with pytest.warns(UserWarning, match=re.escape(f"damaged checkpoint skipped: {path}")):
            trainer = Trainer(tiny(out, "train.total_steps=2", "train.save_every=1"), resume="latest",
                              progress=False)
        assert trainer.start_step == 1
        assert trainer.train() == 0
        ckpt.verify(damaged)  # written anew by the resumed run
        a, b = weights(straight / "checkpoints" / "step_000002"), weights(damaged)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000001", "step_000002", "step_000002.damaged", "step_000002.damaged-2"]


def test_existing_run_needs_resume(straight):
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny(straight, "train.total_steps=4"), progress=False)


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny(tmp_path / "empty", "train.total_steps=1"), resume="latest", progress=False)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        Trainer(tiny(tmp_path / "x", "train.total_steps=1"), resume=str(tmp_path), progress=False)


def test_crash_during_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    """A save that dies half-way leaves only a .tmp directory, which --resume never picks and the next save
    clears."""
    trainer = Trainer(tiny(tmp_path / "run", "train.total_steps=1"), progress=False)
    real = trainer.opt.save_checkpoint

    def dies(directory, state, tokenizer):
        real(directory, state, tokenizer)
        (directory / "policy" / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(trainer.opt, "save_checkpoint", dies)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(1)
    assert ckpt.latest_checkpoint(tmp_path / "run") is None
    assert list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    monkeypatch.setattr(trainer.opt, "save_checkpoint", real)
    final = trainer.save(1)
    assert ckpt.latest_checkpoint(tmp_path / "run") == final
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_plot_writes_pngs(straight, tmp_path):
    from arpo.cli.plot import plot_run

    paths = plot_run(straight, tmp_path)
    assert {p.name for p in paths} == {"reward.png", "tools.png", "entropy.png", "loss.png", "throughput.png",
                                       "time.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def _arpo(*args, **kw):
    return subprocess.run([sys.executable, "-m", "arpo.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kw)


def test_cli_errors(tmp_path):
    r = _arpo("train", "--config", "configs/demo.yaml", "--set", "train.updat=packed")
    assert r.returncode == 2 and "did you mean 'update'" in r.stderr
    r = _arpo("plot", str(tmp_path))
    assert r.returncode == 2 and "metrics.jsonl" in r.stderr
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    r = _arpo("plot", str(tmp_path))
    assert r.returncode == 2 and "metrics.jsonl:2" in r.stderr


def test_sigterm_finishes_the_step_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--config", "configs/demo.yaml"] + [a for s in TINY for a in ("--set", s)]
    args += ["--set", f"train.output_dir={out}", "--set", "train.total_steps=200", "--set", "train.save_every=0"]
    proc = subprocess.Popen([sys.executable, "-m", "arpo.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by signal" in err
    last = max(r["step"] for r in read_metrics(out))
    assert 1 <= last < 200
    assert ckpt.latest_checkpoint(out) == ckpt.checkpoint_dir(out, last)
    assert ckpt.load_state(ckpt.checkpoint_dir(out, last))["step"] == last


def test_kl_to_reference_model_and_flat_update(tmp_path):
    """A run with the KL term (frozen reference = the starting model), flat updates, and a non-default estimator
    and credit: its metrics carry the KL, which is ~0 on the first step: one mini-batch per step, so the KL is
    measured before any update (policy == reference)."""
    out = tmp_path / "kl"
    cfg = tiny(out, "train.total_steps=1", "algo.kl_coef=0.1", "train.update=flat", "algo.agg=seq-mean-token-sum",
               "train.mini_batch_size=2", "algo.estimator=rloo", "algo.credit=hard")
    trainer = Trainer(cfg, progress=False)
    assert trainer.ref is not None and not any(p.requires_grad for p in trainer.ref.parameters())
    assert trainer.train() == 0
    (m,) = read_metrics(out)
    assert "kl_mean" in m and abs(m["kl_mean"]) < 0.05 and m["loss"] == m["loss"]


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_leaf_advantages_see_the_batch_of_every_rank(rank, monkeypatch):
    """Under data parallelism the estimator runs over every rank's rewards (gathered), and each rank keeps its
    own prompts' share: a batch-level estimator gives what one process would."""
    import numpy as np

    from arpo.algos.advantages import get_estimator
    from arpo.tree import TrajectoryTree
    from arpo.train.dist import Dist

    rewards = [[[1.0, 0.0], [0.5, 0.5, 2.0]], [[3.0, 1.0]], [[0.0, 1.0, 1.0], [4.0], [2.0, 0.0]]]  # per rank
    trees = []
    for group in rewards[rank]:
        t = TrajectoryTree([1])
        for r in group:
            t.set_reward(t.add(0, [2], True), r)
        trees.append(t)
    trainer = Trainer.__new__(Trainer)  # no model: only the advantage step
    trainer.cfg = load_config(ROOT / "configs" / "demo.yaml", ["algo.estimator=reinforce_pp"])
    trainer.dist = Dist(rank=rank, world=3)
    monkeypatch.setattr(trainer, "_gather", lambda obj: [
        obj if k == rank else [np.array(g) for g in rewards[k]] for k in range(3)])
    everyone = get_estimator("reinforce_pp")([np.array(g) for rank_groups in rewards for g in rank_groups], eps=1e-6)
    start = sum(len(r) for r in rewards[:rank])
    got = trainer._leaf_advantages(trees)
    assert len(got) == len(trees)
    for a, b in zip(got, everyone[start:start + len(trees)]):
        np.testing.assert_array_equal(a, b)


def test_training_seed_never_changes_the_questions(tmp_path):
    """train.seed orders and samples; the embedded tasks stay the ones the search index was built from."""
    from transformers import AutoTokenizer

    from arpo.train.data import load_prompts

    tok = AutoTokenizer.from_pretrained(ROOT / "assets" / "demo-agent")
    a = load_prompts(tiny(tmp_path / "a", "train.seed=0", "data.train=[kbqa]"), tok, "train", limit=5, no_bar=True)
    b = load_prompts(tiny(tmp_path / "b", "train.seed=7", "data.train=[kbqa]"), tok, "train", limit=5, no_bar=True)
    assert [p.example.question for p in a] == [p.example.question for p in b]


def test_python_api_with_user_tool_reward_and_rows(tmp_path):
    """arpo.Trainer from a dict config with in-memory rows, a user tool that fails on every other call and returns
    non-text on others, and a lambda reward: the run trains, evaluates and records what it can."""
    import arpo

    calls = []

    def flaky(code: str):
        """runs code (badly)."""
        calls.append(code)
        if len(calls) % 3 == 1:
            raise RuntimeError("tool bug")
        return None if len(calls) % 3 == 2 else "42"

    rows = [{"question": f"What is {a} * 3?", "answer": str(3 * a)} for a in range(100, 108)]
    config = {"data": {"max_prompt_tokens": 200}, "tools": {"enabled": []},
              "rollout": {"M": 4, "N": 2, "max_response_tokens": 64, "token_budget": 4096},
              "train": {"output_dir": str(tmp_path / "run"), "total_steps": 1, "batch_size": 2, "mini_batch_size": 2,
                        "micro_batch_tokens": 1024, "eval_every": 1, "save_every": 0}}
    with pytest.warns(UserWarning, match="has no import path"):
        trainer = arpo.Trainer(config, tools={"python": flaky}, reward=lambda response, truth, example: 0.5,
                               train_data=rows, test_data=rows[:2], progress=False)
    assert trainer.train() == 0
    assert trainer.final_step == 1 and trainer.last_metrics["reward_mean"] == 0.5
    run = tmp_path / "run"
    assert (run / "data" / "train.jsonl").is_file() and len((run / "eval" / "step_000001.jsonl").read_text().splitlines()) == 2
    assert f"test: [{run / 'data' / 'test.jsonl'}]" in (run / "config.yaml").read_text()
    prompt = trainer.tokenizer.decode(trainer.train_prompts[0].ids)
    assert "<python>code</python> runs code (badly)." in prompt  # the user's docstring is what the model reads
