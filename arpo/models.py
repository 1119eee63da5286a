"""Loading a policy from disk: the tokenizer and the transformers causal LM of a model directory
(``save_pretrained`` format), and the device they go on. The one place that calls ``from_pretrained``: the
trainer (policy, reference model, tokenizer), ``arpo eval`` and the demo all load through it.

LoRA (peft) lives here too: ``add_lora`` injects adapters into a loaded model in place (only they train),
``merged_weights`` / ``merged_state_dict`` give the plain model's weights with the adapters merged (what the
rollout engines and a checkpoint's ``policy/`` get), ``save_lora_adapter`` / ``load_lora_adapter`` write and read
a peft adapter directory, ``lora_disabled`` runs the base model (the reference model of the KL term).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

DEMO_AGENT = "assets/demo-agent"  # the config's default model: the embedded demo agent
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def local_dir(path: str, what: str | None) -> str:
    """``path`` when it is a directory. The embedded default ``assets/demo-agent`` is also found beside the
    package when the working directory is elsewhere (a script run from another folder). Anything else is a
    ``ValueError`` naming ``what``: models are local directories, never fetched from a hub at run time."""
    if Path(path).is_dir():
        return path
    if path == DEMO_AGENT and (_PACKAGE_ROOT / DEMO_AGENT).is_dir():
        return str(_PACKAGE_ROOT / DEMO_AGENT)
    name = f"{what} {path!r}" if what else repr(path)
    raise ValueError(f"{name}: no such directory (a model is a local save_pretrained directory; "
                     "download hub models first, e.g. with `huggingface-cli download`)")


def pick_device(local_rank: int) -> torch.device:
    """The CUDA device of ``local_rank`` (made the current one) when there is CUDA, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def load_tokenizer(path: str, *, what: str | None = "model.tokenizer"):
    """The tokenizer of a local directory, with a clear error (naming ``what`` and the path) when it has none."""
    from transformers import AutoTokenizer

    path = local_dir(path, what)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        name = f"{what} {path!r}" if what else repr(path)
        raise ValueError(f"{name}: cannot load a tokenizer from it: {err}") from err


def load_causal_lm(path: str, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                   attn_implementation: str | None = None) -> nn.Module:
    """A transformers causal LM from a local directory, with a clear error when the path is not one."""
    from transformers import AutoModelForCausalLM

    path = local_dir(path, "model.path")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    except (OSError, ValueError) as err:
        raise ValueError(f"model.path {path!r}: cannot load a transformers causal LM from it: {err}") from err
    return model.to(device)


# ----------------------------------------------------------------------------------------------------------
# LoRA (peft): adapters injected into the transformers model in place, so the model keeps its class, its
# forward and its decoder/LM-head layout (arpo_kernels.hf reads them); peft is imported only when LoRA is used.

ADAPTER = "default"  # peft's adapter name: one adapter per model here
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # adapter files name weights as seen from a PeftModel wrapping the model


def add_lora(model: nn.Module, *, r: int, alpha: float, targets: list[str], dropout: float = 0.0,
             base_path: str | None = None) -> nn.Module:
    """Inject LoRA adapters of rank ``r`` into ``model``'s nn.Linear layers named by ``targets`` (peft's rule: a
    module matches when its name equals an entry or ends in '.<entry>') and freeze every other parameter: only
    the adapters train. Returns ``model`` (mutated). Raises ConfigError naming ``model.lora_targets`` when an
    entry matches nothing, matches something that is not an nn.Linear, or matches the LM head (the fused
    log-prob path reads the head's weight directly, so an adapter on it would be ignored)."""
    from peft import LoraConfig, inject_adapter_in_model

    _check_lora_targets(model, targets)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none",
                        base_model_name_or_path=base_path)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    return model


def _check_lora_targets(model: nn.Module, targets: list[str]) -> None:
    from .config import ConfigError

    modules = dict(model.named_modules())
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in modules.items() if isinstance(m, nn.Linear)})
    head = model.get_output_embeddings()
    for target in targets:
        found = [name for name in modules if name == target or name.endswith("." + target)]
        if not found:
            raise ConfigError(f"model.lora_targets: {target!r} matches no module of {type(model).__name__}; its "
                              f"nn.Linear layers are named {', '.join(linear)} (targets: {targets})")
        for name in found:
            if modules[name] is head:
                raise ConfigError(f"model.lora_targets: {target!r} matches the LM head {name!r}, which the fused "
                                  "log-prob path reads directly (its adapter would be ignored); leave it out")
            if not isinstance(modules[name], nn.Linear):
                raise ConfigError(f"model.lora_targets: {target!r} matches {name!r}, a "
                                  f"{type(modules[name]).__name__}, not an nn.Linear; name Linear layers "
                                  f"({', '.join(linear)})")


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module name -> peft LoRA layer of ``model`` (empty without LoRA; peft is not imported then)."""
    if getattr(model, "peft_config", None) is None:
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


def merged_weights(model: nn.Module):
    """``(name, tensor)`` pairs of ``model``'s weights as the plain transformers model's state dict (the names
    ``from_pretrained`` and the rollout engines use): each LoRA layer's weight merged, W + (alpha / r)·B·A,
    exactly as peft's ``merge_and_unload`` computes it, the adapters left out. One merged tensor is made at a
    time (the others are the model's own), so a consumer that copies each away never holds a second model.
    Without LoRA: ``model.state_dict()``'s items."""
    layers = lora_layers(model)
    for key, value in model.state_dict().items():
        owner, sep, rest = key.partition(".base_layer.")
        if sep and owner in layers:
            if rest == "weight":
                with torch.no_grad():
                    value = value + layers[owner].get_delta_weight(ADAPTER)
            yield f"{owner}.{rest}", value
        elif key.partition(".lora_")[0] not in layers:
            yield key, value


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``merged_weights`` as a dict (every merged tensor at once: for saving)."""
    return dict(merged_weights(model))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under peft's file names (``...q_proj.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: adapters sit on Linear layers only (no embedding is ever a target), and peft's
    # "auto" would look the base model's config up by name, on the hub when the path is not the working directory's
    return get_peft_model_state_dict(model, adapter_name=ADAPTER, save_embedding_layers=False)


def save_lora_adapter(directory: str | Path, model: nn.Module) -> None:
    """``directory``: adapter_config.json + adapter_model.safetensors, the layout ``peft.PeftModel.from_pretrained``
    loads over the base model."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config[ADAPTER].save_pretrained(str(directory))
    weights = {_PEFT_PREFIX + k: v.detach().contiguous() for k, v in lora_state_dict(model).items()}
    save_file(weights, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_lora_adapter(model: nn.Module, directory: str | Path) -> None:
    """The adapter weights of ``directory`` (``save_lora_adapter``) into ``model``'s LoRA layers, which must be
    the same (same targets and rank): otherwise a ValueError naming what differs."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    saved = {k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(path)).items()}
    own = lora_state_dict(model)
    if saved.keys() != own.keys():
        extra, missing = sorted(saved.keys() - own.keys()), sorted(own.keys() - saved.keys())
        raise ValueError(f"{path}: adapter does not fit the model's LoRA layers (model.lora_targets differ?): "
                         f"unexpected {extra[:3]}, missing {missing[:3]}")
    shapes = [k for k in own if saved[k].shape != own[k].shape]
    if shapes:
        raise ValueError(f"{path}: {shapes[0]} has shape {tuple(saved[shapes[0]].shape)}, the model's "
                         f"{tuple(own[shapes[0]].shape)} (model.lora_r differs?)")
    set_peft_model_state_dict(model, saved, adapter_name=ADAPTER)


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    """Inside: ``model`` computes as its base model (every LoRA layer returns base_layer(x), bit for bit)."""
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)
