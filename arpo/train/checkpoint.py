"""Atomic checkpoints of a training run.

``RUN_DIR/checkpoints/step_000040/`` holds
  policy/            the policy (``save_pretrained``, safetensors) and its tokenizer: loadable by transformers
                     and SGLang as it is
  trainer_state.pt   step, optimizer and scheduler states (torch backend), RNG states, a few run facts
  config.yaml        the run's config
  deepspeed/         DeepSpeed's own files (ZeRO-partitioned optimizer states) when train.deepspeed is on

A checkpoint is written into ``checkpoints/.tmp-step_000040`` and renamed into place once every file is
written and flushed to disk; a crash leaves at most a ``.tmp-*`` directory, which ``latest_checkpoint``
ignores and the next save removes. Only the newest ``keep`` checkpoints are kept.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step_(\d{6,})$")
STATE_FILE = "trainer_state.pt"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir`` (temporary directories never count)."""
    root = Path(run_dir) / CHECKPOINTS
    found = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := _NAME.match(p.name)) and p.is_dir())
    return found[-1][1] if found else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_tmp(run_dir: str | Path, step: int) -> Path:
    """An empty ``.tmp-step_*`` directory (stale ones from crashed saves are removed first)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_dir(run_dir, step)
    tmp.mkdir()
    return tmp


def tmp_dir(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written before it is renamed into place."""
    return Path(run_dir) / CHECKPOINTS / f".tmp-step_{step:06d}"


def commit_tmp(tmp: Path, final: Path, keep: int = 0) -> Path:
    """fsync every file of ``tmp``, rename it to ``final``, fsync the parent; then prune old checkpoints."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(tmp)
    os.rename(tmp, final)
    _fsync(final.parent)
    if keep > 0:
        _prune(final.parent, keep)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := _NAME.match(p.name)))
    for _, old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def fingerprint(model: torch.nn.Module) -> list[float]:
    """Per parameter (by name): float64 sum and sum of squares; equal weights give equal fingerprints."""
    out = []
    for _, p in sorted(model.named_parameters()):
        d = p.detach().double()
        out += [float(d.sum()), float((d * d).sum())]
    return out


def save_policy(directory: Path, model: torch.nn.Module, tokenizer, state_dict: dict | None = None) -> None:
    """``save_pretrained`` of the model (safetensors; ``state_dict`` overrides its weights, e.g. gathered
    from ZeRO-3 partitions) and its tokenizer into ``directory``."""
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(directory)


def load_state(checkpoint: str | Path) -> dict:
    """The trainer state of a checkpoint directory, with a clear error when it is not one."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file() or not (Path(checkpoint) / "policy" / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint directory (expected {STATE_FILE} and "
                                "policy/config.json)")
    return torch.load(path, map_location="cpu", weights_only=False)
