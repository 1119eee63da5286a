"""Test-session set-up: Triton kernels run on CPU tensors through the interpreter when no GPU is present.
TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection start."""
import os
import shutil
import subprocess


def _has_cuda() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
