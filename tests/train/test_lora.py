"""LoRA via peft (model.lora_r > 0) on the demo agent: only the adapters train (the optimizer holds only them,
the base weights never change), the rollout engine gets the merged weights, checkpoints hold the adapter and a
merged plain export, the reference model is the base with the adapters off, packed == flat, exact resume, and
clear errors for bad targets and mismatched resumes."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from arpo.config import AlgoConfig, ConfigError
from arpo.models import (add_lora, has_lora, load_causal_lm, lora_disabled, lora_state_dict, merged_state_dict,
                         save_lora_adapter)
from arpo.train import checkpoint as ckpt
from arpo.train.trainer import Trainer
from arpo.train.tracking import read_metrics

from .test_packed_vs_flat import DEMO, LOSS_ATOL, _loss_and_grads, _trees
from .test_trainer import tiny

pytest.importorskip("peft")

# the KL term: the reference is the policy with its adapters off; one optimiser step per training step; adapter
# dropout in the training passes (random: exact resume must restore its RNG too)
LORA = ["model.lora_r=4", "model.lora_alpha=8", "model.lora_dropout=0.1", "algo.kl_coef=0.01",
        "train.mini_batch_size=2"]


def _lora_model(scale: float = 0.02, targets=("q_proj", "v_proj", "up_proj", "down_proj")):
    """The demo agent with rank-4 adapters whose B is random (peft starts B at 0, a no-op adapter)."""
    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(DEMO)), r=4, alpha=8.0, targets=list(targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    return model


# ------------------------------------------------------------------------------------------- the model


def test_bad_targets_name_the_target_and_the_modules():
    model = load_causal_lm(str(DEMO))
    with pytest.raises(ConfigError, match=re.escape("model.lora_targets: 'qproj' matches no module of "
                                                    "Qwen2ForCausalLM; its nn.Linear layers are named down_proj, "
                                                    "gate_proj, k_proj, lm_head, o_proj, q_proj")):
        add_lora(model, r=4, alpha=8.0, targets=["q_proj", "qproj"])
    with pytest.raises(ConfigError, match="'lm_head' matches the LM head"):
        add_lora(model, r=4, alpha=8.0, targets=["lm_head"])
    with pytest.raises(ConfigError, match="'mlp' matches 'model.layers.0.mlp', a Qwen2MLP, not an nn.Linear"):
        add_lora(model, r=4, alpha=8.0, targets=["mlp"])
    assert not has_lora(model)  # nothing was injected by the refused calls


def test_only_adapters_train_and_merged_weights_are_peft_merge(tmp_path):
    from peft import PeftModel

    base = load_causal_lm(str(DEMO))
    model = _lora_model()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    merged = merged_state_dict(model)
    assert list(merged) == list(base.state_dict())  # the plain model's names, in its order
    changed = {k for k in merged if not torch.equal(merged[k], base.state_dict()[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight", "up_proj.weight", "down_proj.weight"))
                           for k in changed)
    # the same bits as peft's own merge of the saved adapter over the base model
    save_lora_adapter(tmp_path / "adapter", model)
    peft_merged = PeftModel.from_pretrained(load_causal_lm(str(DEMO)), tmp_path / "adapter").merge_and_unload()
    for k, v in peft_merged.state_dict().items():
        assert torch.equal(v, merged[k]), k
    # and the merged plain model computes what the LoRA model computes
    base.load_state_dict(merged)
    ids = torch.tensor([[5, 17, 300, 2000, 9, 41]])
    with torch.no_grad():
        torch.testing.assert_close(base(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_lora_disabled_is_the_base_model_bit_for_bit():
    base = load_causal_lm(str(DEMO))
    model = _lora_model()
    ids = torch.tensor([[5, 17, 300, 2000, 9, 41]])
    with torch.no_grad():
        with lora_disabled(model):
            off = model(ids).logits
        on = model(ids).logits
        assert torch.equal(off, base(ids).logits)
    assert not torch.equal(on, off)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # trainable again


CASES = [("soft", "token-mean", False), ("hard", "seq-mean-token-mean", True)]


@pytest.fixture(scope="module")
def lora_trees():
    model = _lora_model()
    return model, _trees(model)


@pytest.mark.parametrize("credit, agg, whole_trees", CASES)
def test_packed_equals_flat_with_lora(lora_trees, credit, agg, whole_trees):
    model, trees = lora_trees
    algo = AlgoConfig(agg=agg, clip_low=0.02, clip_high=0.03, entropy_coef=0.01)
    loss_f, g_f, _ = _loss_and_grads(model, trees, "flat", agg, credit, 10_000, algo)
    loss_p, g_p, _ = _loss_and_grads(model, trees, "packed", agg, credit, 10_000, algo, whole_trees)
    assert abs(loss_f.item()) > 1e-4
    torch.testing.assert_close(loss_p, loss_f, rtol=1e-5, atol=LOSS_ATOL)
    assert g_f.keys() == g_p.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    for name in g_f:
        scale = g_f[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(g_p[name], g_f[name], rtol=0, atol=2e-5 * scale + 1e-9, msg=name)


# ------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """2 LoRA steps with a checkpoint after each; the Trainer is kept for inspection."""
    out = tmp_path_factory.mktemp("lora")
    trainer = Trainer(tiny(out, "train.total_steps=2", "train.save_every=1", *LORA), progress=False)
    assert trainer.ref is None  # no second model: the reference is the policy with its adapters off
    assert trainer.train() == 0
    return out, trainer


def test_optimizer_holds_only_adapters_and_base_never_moves(lora_run):
    out, trainer = lora_run
    model = trainer.opt.model
    lora = {id(p): n for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    in_opt = [p for g in trainer.opt.optimizer.param_groups for p in g["params"]]
    assert sorted(id(p) for p in in_opt) == sorted(lora)
    assert len(trainer.opt.optimizer.state) == len(lora)  # every adapter tensor stepped, nothing else
    start = load_file(DEMO / "model.safetensors")
    for name, p in model.named_parameters():
        if id(p) not in lora:
            assert torch.equal(p.detach(), start[name.replace(".base_layer.", ".")]), name
    state = ckpt.load_state(ckpt.checkpoint_dir(out, 2))
    assert len(state["optimizer"]["state"]) == len(lora)
    saved = {k: v.numel() for s in state["optimizer"]["state"].values() for k, v in s.items() if k != "step"}
    assert 0 < sum(saved.values()) < sum(p.numel() for p in model.parameters()) / 4


def test_engine_gets_the_merged_weights(lora_run):
    _, trainer = lora_run
    engine = trainer.engine.model.state_dict()
    merged = merged_state_dict(trainer.opt.model)
    assert engine.keys() == merged.keys()
    for k in engine:
        assert torch.equal(engine[k], merged[k]), k
    start = load_file(DEMO / "model.safetensors")
    moved = [k for k in start if not torch.equal(start[k], engine[k])]
    assert moved and all(".self_attn." in k or ".mlp." in k for k in moved)


def test_checkpoint_holds_adapter_and_merged_export(lora_run):
    from transformers import AutoModelForCausalLM

    out, trainer = lora_run
    final = ckpt.checkpoint_dir(out, 2)
    listed = json.loads((final / ckpt.MANIFEST).read_text())["files"]
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(listed)
    adapter = load_file(final / "adapter" / "adapter_model.safetensors")
    assert adapter.keys() == {"base_model.model." + k for k in lora_state_dict(trainer.opt.model)}
    exported = AutoModelForCausalLM.from_pretrained(final / "policy", dtype=torch.float32)
    assert not has_lora(exported)
    merged = merged_state_dict(trainer.opt.model)
    for k, v in exported.state_dict().items():
        assert torch.equal(v, merged[k]), k
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert records[0]["kl_mean"] == 0.0 < records[1]["kl_mean"]  # step 1: policy == base, then it moves


def test_resume_with_lora_is_exact(lora_run, tmp_path):
    """Resumed from the straight run's step-1 checkpoint (adapter, optimizer state, RNG): step 2 gives the same
    adapter and merged export bit for bit."""
    out, _ = lora_run
    run = tmp_path / "resumed"
    shutil.copytree(ckpt.checkpoint_dir(out, 1), ckpt.checkpoint_dir(run, 1))
    trainer = Trainer(tiny(run, "train.total_steps=2", "train.save_every=1", *LORA), resume="latest",
                      progress=False)
    assert trainer.start_step == 1
    assert trainer.train() == 0
    for sub, name in (("adapter", "adapter_model.safetensors"), ("policy", "model.safetensors")):
        a = load_file(ckpt.checkpoint_dir(out, 2) / sub / name)
        b = load_file(ckpt.checkpoint_dir(run, 2) / sub / name)
        assert a.keys() == b.keys()
        assert not [k for k in a if not torch.equal(a[k], b[k])], sub


@pytest.mark.parametrize("override, message", [
    ("model.lora_r=0", "model.lora_r: checkpoint step_000001 was trained with model.lora_r = 4; got 0"),
    ("model.lora_r=8", "model.lora_r: checkpoint step_000001 was trained with model.lora_r = 4; got 8"),
    ("model.lora_targets=[q_proj]", "model.lora_targets: checkpoint step_000001 was trained with"),
])
def test_resume_with_other_lora_settings_is_refused(lora_run, tmp_path, override, message):
    out, _ = lora_run
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(tiny(tmp_path / "x", "train.total_steps=3", *LORA, override),
                resume=str(ckpt.checkpoint_dir(out, 1)), progress=False)


def test_resume_on_another_base_model_is_refused(lora_run, tmp_path):
    out, _ = lora_run
    other = tmp_path / "other-base"
    model = load_causal_lm(str(DEMO))
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(other)
    with pytest.raises(ValueError, match="differs from the base model"):
        Trainer(tiny(tmp_path / "x", "train.total_steps=3", *LORA, f"model.path={other}",
                     f"model.tokenizer={DEMO}"), resume=str(ckpt.checkpoint_dir(out, 1)), progress=False)


def test_engine_refuses_weights_that_do_not_fit():
    """The engine copies the merged weights one tensor at a time; a model of another shape, or one missing
    weights, is an error (as load_state_dict's strict check was), not a partial copy."""
    from transformers import AutoTokenizer

    from arpo.engines.hf import HFEngine

    engine = HFEngine(load_causal_lm(str(DEMO)), AutoTokenizer.from_pretrained(DEMO))
    with pytest.raises(ValueError, match=re.escape("update_weights: weight (3, 2) does not fit the engine's model "
                                                   "(no such weight)")):
        engine.update_weights(torch.nn.Linear(2, 3))
    lora = _lora_model()
    lora.model.norm = torch.nn.Identity()  # its weight is gone
    with pytest.raises(ValueError, match=re.escape("update_weights: missing weights ['model.norm.weight']")):
        engine.update_weights(lora)
    engine.update_weights(_lora_model())  # the same architecture with adapters: fits
    assert torch.equal(engine.model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                       merged_state_dict(_lora_model())["model.layers.0.self_attn.q_proj.weight"])
