"""Atomic checkpoints of a training run.

``RUN_DIR/checkpoints/step_000040/`` holds
  policy/            the policy (``save_pretrained``, safetensors) and its tokenizer: loadable by transformers
                     and SGLang as it is (with LoRA: the base model with the adapters merged)
  adapter/           with LoRA (model.lora_r > 0): the adapter alone, as peft saves it (adapter_config.json,
                     adapter_model.safetensors); --resume loads the base from model.path and this over it
  trainer_state.pt   step, optimizer and scheduler states (torch backend), RNG states, a few run facts
  config.yaml        the run's config
  deepspeed/         DeepSpeed's own files (ZeRO-partitioned optimizer states) when train.deepspeed is on
  manifest.json      ``{"files": {relative path: {"size": bytes, "sha256": hex digest}}}`` of every other file

A checkpoint is written into ``checkpoints/.tmp-step_000040`` and renamed into place once every file is
written and flushed to disk; a crash leaves at most a ``.tmp-*`` directory, which ``latest_checkpoint``
ignores and the next save removes. Only the newest ``keep`` checkpoints are kept.

Damage after the save (a disk error, an overwrite, a truncated copy) is found by ``verify`` against the
manifest: ``resume_latest`` skips damaged checkpoints for the newest intact one, and ``load_state`` unpickles
nothing but tensors and plain containers (``weights_only=True``), so trainer_state.pt cannot run code
(DeepSpeed loads its own files in deepspeed/ itself, fully unpickling them).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..models import has_lora, merged_state_dict, save_lora_adapter

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step_(\d{6,})$")
STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
MANIFEST = "manifest.json"


class DamagedCheckpoint(ValueError):
    """A checkpoint file that is missing, unreadable, or differs from what its save recorded."""


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The committed checkpoint directories of ``run_dir``, oldest first (``.tmp-*`` ones never count)."""
    root = Path(run_dir) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir``, intact or not (``resume_latest`` checks)."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def write_manifest(directory: Path) -> None:
    """``directory/manifest.json``: size and sha256 of every file under ``directory`` but the manifest."""
    files = {path.relative_to(directory).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(directory.rglob("*")) if path.is_file() and path != directory / MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def verify(checkpoint: str | Path) -> None:
    """Check every file that ``checkpoint``'s manifest lists (size, then sha256); files it does not list are
    ignored. Raises DamagedCheckpoint naming the first bad file and why, FileNotFoundError when ``checkpoint``
    is no checkpoint directory at all.

    A checkpoint without manifest.json counts as damaged: every save since checksums were recorded writes
    one before the directory is renamed into place, and older checkpoints also pickled numpy's RNG state,
    which ``load_state`` (weights_only) refuses, so they could not be resumed anyway."""
    checkpoint = Path(checkpoint)
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        _require_checkpoint(checkpoint)
        raise DamagedCheckpoint(f"{manifest}: missing (no checksums to verify the checkpoint against)")
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        expected = {rel: (int(f["size"]), str(f["sha256"])) for rel, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DamagedCheckpoint(f"{manifest}: unreadable ({type(err).__name__}: {err})") from err
    root = checkpoint.resolve()
    outside = [rel for rel in expected if not (checkpoint / rel).resolve().is_relative_to(root)]
    if outside:
        raise DamagedCheckpoint(f"{manifest}: lists {outside[0]!r}, outside the checkpoint")
    for required in (STATE_FILE, "policy/config.json"):  # a manifest that leaves them out checks nothing
        if required not in expected:
            raise DamagedCheckpoint(f"{manifest}: does not list {required}")
    for rel, (size, digest) in sorted(expected.items()):
        path = checkpoint / rel
        try:
            if not path.is_file():
                raise DamagedCheckpoint(f"{path}: missing (listed in {MANIFEST})")
            if (actual := path.stat().st_size) != size:
                raise DamagedCheckpoint(f"{path}: {actual} bytes, {MANIFEST} records {size} (truncated or "
                                        "overwritten)")
            if _sha256(path) != digest:
                raise DamagedCheckpoint(f"{path}: sha256 differs from {MANIFEST} (overwritten or corrupted)")
        except OSError as err:
            raise DamagedCheckpoint(f"{path}: unreadable ({err})") from err


def resume_latest(run_dir: str | Path) -> Path:
    """The checkpoint ``--resume`` continues from: the newest one of ``run_dir`` that passes ``verify``.
    Each newer, damaged one is renamed to ``step_N.damaged`` (so the resumed run writes its own step_N, and
    nothing is deleted) with a warning naming the bad file. Raises FileNotFoundError when ``run_dir`` has no
    checkpoint, DamagedCheckpoint (naming every reason; nothing renamed) when none is intact."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(checkpoints(run_dir)):
        try:
            verify(path)
        except (DamagedCheckpoint, FileNotFoundError) as err:
            damaged.append((path, str(err)))
            continue
        for bad, reason in damaged:
            aside = _set_aside(bad)
            warnings.warn(f"damaged checkpoint skipped: {reason}; moved to {aside}, resuming from {path}",
                          stacklevel=2)
        return path
    if not damaged:
        raise FileNotFoundError(f"--resume: no checkpoint in {Path(run_dir) / CHECKPOINTS}")
    raise DamagedCheckpoint(f"--resume: no intact checkpoint in {Path(run_dir) / CHECKPOINTS}: "
                            + "; ".join(reason for _, reason in damaged))


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to a free ``<name>.damaged[-k]`` beside it (not a checkpoint name: never resumed or
    pruned)."""
    aside, k = path.with_name(f"{path.name}.damaged"), 1
    while aside.exists():
        k += 1
        aside = path.with_name(f"{path.name}.damaged-{k}")
    os.rename(path, aside)
    return aside


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def rng_state() -> dict:
    """The python, numpy, torch (and CUDA) RNG states in types that ``weights_only`` loading accepts (numpy's
    key array as a list of ints)."""
    name, keys, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), *rest),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(tuple(state["numpy"]))
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
    """Write ``tmp``'s manifest, fsync every file of ``tmp``, rename it to ``final``, fsync the parent; then
    prune old checkpoints. (The rename makes the manifest, like every file, appear complete or not at all.)"""
    write_manifest(tmp)
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
    for old in checkpoints(root.parent)[:-keep]:
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
    from ZeRO-3 partitions) and its tokenizer into ``directory``. A model with LoRA adapters is saved as the
    plain model with the adapters merged (``save_adapter`` writes the adapter alone)."""
    if state_dict is None and has_lora(model):
        state_dict = merged_state_dict(model)
    model.save_pretrained(directory, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(directory)


def save_adapter(checkpoint: Path, model: torch.nn.Module) -> None:
    """``checkpoint/adapter``: the LoRA adapter of ``model`` as peft saves it (nothing without LoRA)."""
    if has_lora(model):
        save_lora_adapter(checkpoint / ADAPTER_DIR, model)


def _require_checkpoint(checkpoint: Path) -> None:
    if not (checkpoint / STATE_FILE).is_file() or not (checkpoint / "policy" / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint directory (expected {STATE_FILE} and "
                                "policy/config.json)")


def load_state(checkpoint: str | Path) -> dict:
    """The trainer state of a checkpoint directory (tensors and plain containers only: ``weights_only``), with
    a clear error when it is no checkpoint (FileNotFoundError) or its state file cannot be loaded
    (DamagedCheckpoint)."""
    _require_checkpoint(Path(checkpoint))
    path = Path(checkpoint) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        raise DamagedCheckpoint(f"{path}: cannot be loaded ({type(err).__name__}): damaged, or it holds "
                                "objects other than tensors and plain containers, which are never unpickled"
                                ) from err
