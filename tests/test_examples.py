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
