"""The examples run as users run them (a subprocess from the repository root), with tiny step counts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# runs the example as a script, then fails if anything of the arpo package was imported
NO_ARPO = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
           "bad = sorted(m for m in sys.modules if m == 'arpo' or m.startswith('arpo.')); "
           "assert not bad, f'imported {bad}'")


def test_kernels_in_a_plain_torch_loop(tmp_path):
    out = tmp_path / "loop"
    r = subprocess.run([sys.executable, "-c", NO_ARPO, "examples/kernels_in_a_torch_loop.py", "--steps", "30",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records] == list(range(1, 31))
    first = sum(x["reward_mean"] for x in records[:5]) / 5
    last = sum(x["reward_mean"] for x in records[-5:]) / 5
    assert last > first + 0.1, (first, last)  # seeded CPU run: ~0.09 -> ~0.3 (chance is 1/16)
    state = torch.load(out / "policy.pt", weights_only=True)
    assert state["head.weight"].shape == (16, 64)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_custom_tool_and_reward_then_evaluate_the_checkpoint(tmp_path):
    """(a) trains 2 steps with the user's calculator and reward on in-memory rows; (c) evaluates the checkpoint it
    wrote on a user JSONL file."""
    out = tmp_path / "calc"
    r = _run("examples/custom_tool_and_reward.py", "--steps", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records] == [1, 2]
    assert all(0.0 <= x["reward_mean"] <= 1.0 for x in records)
    checkpoint = out / "checkpoints" / "step_000002"
    assert (checkpoint / "manifest.json").is_file() and (checkpoint / "policy" / "model.safetensors").is_file()
    config = (out / "config.yaml").read_text()
    assert f"train: [{out / 'data' / 'train.jsonl'}]" in config  # the in-memory rows, written for the record
    assert "reward: __main__:partial_credit" in config
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 256

    ev = tmp_path / "eval"
    r = _run("examples/evaluate_your_jsonl.py", "--model", str(checkpoint / "policy"), "--out", str(ev))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["questions"] == 3 and summary["model"] == str(checkpoint / "policy")
    samples = [json.loads(line) for line in (ev / "samples.jsonl").read_text().splitlines()]
    assert [s["ground_truth"] for s in samples] == [["112936"], ["86081"], ["96979", "96,979"]]
    assert "accuracy" in r.stdout
