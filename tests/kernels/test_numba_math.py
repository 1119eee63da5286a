"""The vectorisable fp32 exp of the numba kernels against numpy's fp64 exp, in units in the last place."""
import numba
import numpy as np
import pytest

from arpo_kernels._numba_math import exp_f32


@numba.njit
def _apply(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (-20.0, 20.0), (-87.0, -40.0), (-87.0, 88.0)])
def test_exp_f32_within_two_ulp(lo, hi):
    x = np.linspace(lo, hi, 200_001).astype(np.float32)
    out = np.empty_like(x)
    _apply(x, out)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert (np.abs(out - exact) / ulp).max() <= 2.0
