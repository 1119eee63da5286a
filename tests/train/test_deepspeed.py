"""DeepSpeed ZeRO data parallelism on CPU: 2 ranks (gloo) under torchrun, ZeRO-2, two steps, then a resumed
third step: finite losses, identical weights on both ranks, checkpoints that load."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arpo.config import load_config
from arpo.train import checkpoint as ckpt
from arpo.train.deepspeed_backend import deepspeed_config
from arpo.train.tracking import read_metrics

from .test_trainer import ROOT, TINY

pytest.importorskip("deepspeed")


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [a for s in TINY for a in ("--set", s)]
    args += ["--set", f"train.output_dir={out}", "--set", "train.batch_size=4", "--set", "train.mini_batch_size=2",
             "--set", "train.zero_stage=2", "--set", "train.save_every=2", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "arpo.cli", "train", "--config", "configs/demo.yaml", "--deepspeed", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_deepspeed_config_from_train_config():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.zero_stage=3", "train.max_grad_norm=0.5"])
    ds = deepspeed_config(cfg)
    assert ds["zero_optimization"] == {"stage": 3} and ds["gradient_clipping"] == 0.5
    assert ds["gradient_accumulation_steps"] == 1 and ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["bf16"] == {"enabled": False}


def test_two_ranks_zero2(tmp_path):
    out = tmp_path / "ds"
    r = _torchrun(out, "--set", "train.total_steps=2")
    assert r.returncode == 0, r.stderr[-4000:]
    records = read_metrics(out)
    assert [m["step"] for m in records] == [1, 2]
    for m in records:
        assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) and m["update_tokens"] > 0
    state = ckpt.load_state(ckpt.checkpoint_dir(out, 2))
    prints = state["weight_fingerprints"]
    assert len(prints) == 2 and prints[0] == prints[1]  # both ranks hold exactly the same weights
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(ckpt.checkpoint_dir(out, 2) / "policy", dtype=torch.float32)
    assert ckpt.fingerprint(saved) == prints[0]
    start = AutoModelForCausalLM.from_pretrained(ROOT / "assets" / "demo-agent", dtype=torch.float32)
    assert ckpt.fingerprint(start) != prints[0]  # the two steps trained something

    r = _torchrun(out, "--set", "train.total_steps=3", "--resume")
    assert r.returncode == 0, r.stderr[-4000:]
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    state = ckpt.load_state(ckpt.checkpoint_dir(out, 3))
    assert state["weight_fingerprints"][0] == state["weight_fingerprints"][1]
