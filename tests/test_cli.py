"""The `arpo` command line: help, config printing and errors (train/eval/plot/demo: tests/train, test_eval_demo)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arpo.cli import main


def test_console_script_help():
    exe = Path(sys.executable).with_name("arpo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "arpo.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    assert all(cmd in out for cmd in ("train", "eval", "plot", "demo", "config", "index"))


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
