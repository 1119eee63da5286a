"""Loading a policy from disk: the tokenizer and the transformers causal LM of a model directory
(``save_pretrained`` format), and the device they go on. The one place that calls ``from_pretrained``: the
trainer (policy, reference model, tokenizer), ``arpo eval`` and the demo all load through it.
"""
from __future__ import annotations

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
