"""Bit-exact reproducibility on CPU (train.deterministic, on by default there): the same 3-step config run twice
gives identical weights, and a run killed with SIGKILL after its first checkpoint and resumed gives the weights
of the straight run, bit for bit. Flat and packed updates, soft and hard credit each appear once."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arpo.train import checkpoint as ckpt

from .test_trainer import ROOT, TINY

# GRPO and ARPO both: ARPO's branches are where tool timing used to decide which paths shared an engine call
RUNS = {"flat-hard": ["train.update=flat", "algo.credit=hard", "rollout.mode=grpo"],
        "packed-soft": ["train.update=packed", "algo.credit=soft", "rollout.mode=arpo"]}


def _args(out: Path, extra: list[str]) -> list[str]:
    sets = [*TINY, *extra, f"train.output_dir={out}", "train.total_steps=3", "train.save_every=1"]
    return [sys.executable, "-m", "arpo.cli", "train", "--config", "configs/demo.yaml",
            *[a for s in sets for a in ("--set", s)]]


def _train(out: Path, extra: list[str], *resume: str) -> None:
    r = subprocess.run([*_args(out, extra), *resume], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _killed_after_first_checkpoint(out: Path, extra: list[str]) -> None:
    """SIGKILL as soon as step 1's checkpoint is in place (the process is inside step 2 or saving it)."""
    proc = subprocess.Popen(_args(out, extra), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while ckpt.latest_checkpoint(out) is None:
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint before the deadline"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt.latest_checkpoint(out) != ckpt.checkpoint_dir(out, 3)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa = load_file(ckpt.checkpoint_dir(a, 3) / "policy" / "model.safetensors")
    wb = load_file(ckpt.checkpoint_dir(b, 3) / "policy" / "model.safetensors")
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ in {different[:5]}"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_runs_and_a_killed_run_give_identical_weights(name, tmp_path):
    extra = RUNS[name]
    _train(tmp_path / "a", extra)
    _killed_after_first_checkpoint(tmp_path / "killed", extra)
    _train(tmp_path / "killed", extra, "--resume", "latest")
    _assert_same_weights(tmp_path / "a", tmp_path / "killed")
    if name == "flat-hard":  # a second straight run (the resumed one already repeats steps 2-3 of the first)
        _train(tmp_path / "b", extra)
        _assert_same_weights(tmp_path / "a", tmp_path / "b")
