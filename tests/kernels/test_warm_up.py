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
