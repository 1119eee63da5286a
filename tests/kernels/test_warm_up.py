"""arpo_kernels.warm_up: runs every kernel the trainer uses, forward and backward, without touching the caller's
random streams (a run with a warm-up samples exactly what one without it would)."""
from __future__ import annotations

import pytest
import torch

from arpo_kernels import warm_up


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_warm_up_runs_and_leaves_the_rng_alone(backend):
    state = torch.get_rng_state()
    seconds = warm_up(backend, torch.float32, "cpu", "k2")
    assert seconds > 0.0 and torch.equal(state, torch.get_rng_state())


def test_warm_up_refuses_what_the_kernels_refuse():
    with pytest.raises(ValueError):
        warm_up("no-such-backend")


@pytest.mark.parametrize("with_kl", [False, True])
def test_warm_up_compiles_the_loss_kernel_the_training_uses(with_kl):
    """In a fresh process, warm_up(with_kl=...) compiles the numba policy-loss kernel of that option set (the
    trainer's: entropy always given, a reference only when algo.kl_coef > 0) and not the other one; before
    this, a run without KL compiled its kernel inside the first training step (3-10 s). The trainer's losses
    go through policy_loss_packed (the "packed" loader)."""
    import subprocess
    import sys

    code = ("import torch; from arpo_kernels import warm_up; from arpo_kernels._numba_policy_loss import _kernel\n"
            "from arpo_kernels.spec import KL_TYPES\n"
            f"warm_up('numba', torch.float32, 'cpu', 'low_var_kl', with_kl={with_kl})\n"
            "kl = KL_TYPES.index('low_var_kl')\n"
            "print([len(_kernel(torch.float32, True, ref, kl, 'packed').signatures) > 0 for ref in (False, True)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == str([not with_kl, with_kl])
