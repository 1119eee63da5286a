"""Checkpoint integrity without a model: the manifest written at save, ``verify`` against it (overwritten,
truncated, deleted files), ``resume_latest`` falling back to the newest intact checkpoint, and ``load_state``
refusing anything but tensors and plain containers. The trainer end to end: tests/train/test_trainer.py."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from arpo.train import checkpoint as ckpt


def save(run: Path, step: int) -> Path:
    """A checkpoint as the trainer commits one: policy files, trainer state (with RNG states), config."""
    tmp = ckpt.prepare_tmp(run, step)
    (tmp / "policy").mkdir()
    (tmp / "policy" / "config.json").write_text("{}", encoding="utf-8")
    (tmp / "policy" / "model.safetensors").write_bytes(os.urandom(4096))
    optimizer = {"state": {0: {"exp_avg": torch.ones(3)}}}
    torch.save({"step": step, "rng": [ckpt.rng_state()], "optimizer": optimizer}, tmp / ckpt.STATE_FILE)
    (tmp / "config.yaml").write_text("train: {}\n", encoding="utf-8")
    return ckpt.commit_tmp(tmp, ckpt.checkpoint_dir(run, step))


def overwrite(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))  # same size: only the checksum can tell


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_manifest_lists_every_file(tmp_path):
    c = save(tmp_path, 1)
    files = json.loads((c / ckpt.MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.yaml", "policy/config.json", "policy/model.safetensors", ckpt.STATE_FILE]
    for rel, f in files.items():
        data = (c / rel).read_bytes()
        assert f == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ckpt.verify(c)
    (c / "notes.txt").write_text("added later")  # files the manifest does not list are ignored
    ckpt.verify(c)


@pytest.mark.parametrize("damage, file, reason", [
    (overwrite, ckpt.STATE_FILE, "sha256 differs"),
    (truncate, "policy/model.safetensors", "bytes, manifest.json records"),
    (Path.unlink, "config.yaml", "missing"),
    (truncate, ckpt.MANIFEST, "unreadable"),
    (Path.unlink, ckpt.MANIFEST, "missing"),
])
def test_verify_names_the_damaged_file(tmp_path, damage, file, reason):
    c = save(tmp_path, 1)
    damage(c / file)
    with pytest.raises(ckpt.DamagedCheckpoint, match=reason) as err:
        ckpt.verify(c)
    assert str(c / file) in str(err.value)


def test_verify_a_directory_that_is_no_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        ckpt.verify(tmp_path)


@pytest.mark.parametrize("damage, file", [(overwrite, ckpt.STATE_FILE),
                                          (truncate, "policy/model.safetensors")])
def test_resume_latest_skips_damaged_checkpoints(tmp_path, damage, file):
    for step in (1, 2, 3):
        save(tmp_path, step)
    damage(ckpt.checkpoint_dir(tmp_path, 3) / file)
    damage(ckpt.checkpoint_dir(tmp_path, 2) / file)
    with pytest.warns(UserWarning, match="damaged checkpoint skipped") as warned:
        assert ckpt.resume_latest(tmp_path) == ckpt.checkpoint_dir(tmp_path, 1)
    messages = [str(w.message) for w in warned]
    assert len(messages) == 2
    for step, message in zip((3, 2), messages):
        assert str(ckpt.checkpoint_dir(tmp_path, step) / file) in message
    # set aside, not deleted: the resumed run writes its own step 2 and 3, which pruning never confuses
    assert ckpt.checkpoints(tmp_path) == [ckpt.checkpoint_dir(tmp_path, 1)]
    names = sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS).iterdir())
    assert names == ["step_000001", "step_000002.damaged", "step_000003.damaged"]


def test_resume_latest_without_an_intact_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.resume_latest(tmp_path)
    for step in (1, 2):
        overwrite(save(tmp_path, step) / ckpt.STATE_FILE)
    with pytest.raises(ckpt.DamagedCheckpoint, match="no intact checkpoint") as err:
        ckpt.resume_latest(tmp_path)
    assert all(str(ckpt.checkpoint_dir(tmp_path, s) / ckpt.STATE_FILE) in str(err.value) for s in (1, 2))
    assert len(ckpt.checkpoints(tmp_path)) == 2  # nothing renamed


def test_state_loads_weights_only_and_restores_the_rng(tmp_path):
    c = save(tmp_path, 1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    state = ckpt.load_state(c)
    ckpt.set_rng_state(state["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert state["step"] == 1 and torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(3))


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)  # what unpickling it would do


def test_state_with_arbitrary_objects_is_refused(tmp_path):
    c = save(tmp_path, 1)
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": _RunsCode(marker)}, c / ckpt.STATE_FILE)
    with pytest.raises(ckpt.DamagedCheckpoint, match="never unpickled") as err:
        ckpt.load_state(c)
    assert str(c / ckpt.STATE_FILE) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", [overwrite, truncate])
def test_damaged_state_is_a_clear_error(tmp_path, damage):
    c = save(tmp_path, 1)
    damage(c / ckpt.STATE_FILE)
    with pytest.raises(ckpt.DamagedCheckpoint, match="cannot be loaded") as err:
        ckpt.load_state(c)
    assert str(c / ckpt.STATE_FILE) in str(err.value)


@pytest.mark.parametrize("edit, reason", [
    (lambda files: {"../../outside.bin": next(iter(files.values()))}, "outside the checkpoint"),
    (lambda files: {}, f"does not list {ckpt.STATE_FILE}"),
    (lambda files: {k: v for k, v in files.items() if k != "policy/config.json"}, "does not list policy/config.json"),
])
def test_a_manifest_that_checks_too_little_is_damage(tmp_path, edit, reason):
    """A rewritten manifest must not vouch for a checkpoint: paths outside it and manifests that leave out the
    state or the model config are refused, and resume falls back to the intact checkpoint before."""
    (tmp_path / "outside.bin").write_bytes(b"x")
    intact, bad = save(tmp_path, 1), save(tmp_path, 2)
    manifest = bad / ckpt.MANIFEST
    files = json.loads(manifest.read_text())["files"]
    manifest.write_text(json.dumps({"files": edit(files)}))
    overwrite(bad / ckpt.STATE_FILE)
    with pytest.raises(ckpt.DamagedCheckpoint, match=reason):
        ckpt.verify(bad)
    with pytest.warns(UserWarning, match="damaged checkpoint skipped"):
        assert ckpt.resume_latest(tmp_path) == intact
