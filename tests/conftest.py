"""Test-session set-up: Triton kernels run on CPU tensors through the interpreter when no GPU is present.
TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection start. Also the
fixtures several test packages share."""
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _has_cuda() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def json_tool_script():
    """scripts/make_json_tool_model.py as a module: a tokenizer with a Qwen2.5-style tool-calling chat template
    (``make_tokenizer``) and a tiny Qwen2 taught to call tools in the JSON format (``make_model``, ``teach``)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_json_tool_model.py"
    spec = importlib.util.spec_from_file_location("make_json_tool_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
