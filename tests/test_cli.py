"""The `arpo` command line: help, config printing and errors, and the demo's end-to-end tree path."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arpo.cli import main
from arpo.config import load_config
from arpo.demo import run_demo


def test_console_script_help():
    exe = Path(sys.executable).with_name("arpo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "arpo.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "config" in out


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "--set", "rollout.M=12", "--set", "algo.dual_clip=3"]) == 0
    out = capsys.readouterr().out
    assert "M: 12" in out and "dual_clip: 3.0" in out


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.budget=3", r"unknown key 'rollout.budget'; valid keys in 'rollout': mode, engine"),
        ("rollout.M=true", r"rollout.M: expected int, got True"),
        ("nosection=1", r"SECTION.FIELD=VALUE"),
    ],
)
def test_config_errors_name_the_key(capsys, override, message):
    assert main(["config", "--set", override]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("advantage", ["soft", "hard"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_demo_packing_is_exact(capsys, advantage, agg):
    cfg = load_config(None, [f"algo.advantage={advantage}", f"algo.agg={agg}", "rollout.M=6", "rollout.N=3"])
    r = run_demo(cfg, prompts=3, seed=1)
    assert r["trajectories"] == 3 * 6
    assert r["unique_tokens"] < r["flat_tokens"]  # branches share their prefixes
    # float32 weights, advantages and log-probs on both sides: the losses agree to float32 precision
    assert r["loss_flat"] == pytest.approx(r["loss_packed"], rel=1e-5, abs=1e-7)
    assert r["clip_frac_flat"] == pytest.approx(r["clip_frac_packed"], rel=1e-5, abs=1e-7)
    assert 0 < r["clip_frac_flat"] < 1  # the synthetic ratios do reach the clip range
    assert "loss" in capsys.readouterr().out


def test_demo_command_uses_the_demo_config(capsys):
    assert main(["demo", "--prompts", "2", "--set", "rollout.M=4", "--set", "rollout.N=2"]) == 0
    out = capsys.readouterr().out
    assert "2 prompts x M=4 leaves" in out
