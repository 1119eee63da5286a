"""numba CPU kernel of the fused policy-loss pass: chunks of tokens in parallel, each writing its gradients and
one row of partial sums (summed afterwards in a fixed order, so results do not depend on thread timing).
Same per-token math as _torch_policy_loss.py."""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from .policy_loss import PARTS
from .reference import LOG_RATIO_CLAMP

CHUNK = 16384


@numba.njit(inline="always")
def _kl(lp, ref, kl_code):
    """(KL, d KL / d lp) for kl_code 0 = low_var_kl, 1 = k1, 2 = k2."""
    if kl_code == 1:
        return lp - ref, 1.0
    if kl_code == 2:
        return 0.5 * (lp - ref) * (lp - ref), lp - ref
    d = ref - lp
    inner = -20.0 <= d <= 20.0
    d = min(max(d, -20.0), 20.0)
    e = math.exp(d)
    k = e - d - 1.0
    grad = (1.0 - e) if (inner and k <= 10.0) else 0.0
    return min(max(k, -10.0), 10.0), grad


@numba.njit(parallel=True, cache=True)
def _fused(lp, ent, old, pos, neg, w, wpos, wneg, ref, has_ref, kl_code, lo, hi, c, kl_coef, ent_coef,
           dlp, dent, parts):
    n = lp.shape[0]
    for ci in numba.prange(parts.shape[0]):
        pg_s = kl_s = ent_s = w_s = wr_s = nlr_s = chi = clo = cdu = 0.0
        rmin, rmax = np.inf, -np.inf
        for i in range(ci * CHUNK, min(n, (ci + 1) * CHUNK)):
            if w[i] == 0.0:  # outside the loss (may hold anything, NaN included)
                dlp[i] = 0.0
                dent[i] = 0.0
                continue
            lr = lp[i] - old[i]
            r = math.exp(min(max(lr, -LOG_RATIO_CLAMP), LOG_RATIO_CLAMP))
            g = 0.0
            if r <= hi:
                g -= pos[i]
            if lo <= r <= c:
                g -= neg[i]
            g = g * r if abs(lr) <= LOG_RATIO_CLAMP else 0.0
            pg_s += -pos[i] * min(r, hi) - neg[i] * min(max(r, lo), c)
            if has_ref:
                k, dk = _kl(lp[i], ref[i], kl_code)
                g += kl_coef * w[i] * dk
                kl_s += w[i] * k
            dlp[i] = g
            dent[i] = -ent_coef * w[i]
            ent_s += w[i] * ent[i]
            w_s += w[i]
            wr_s += w[i] * r
            nlr_s -= w[i] * lr
            chi += wpos[i] if r > hi else 0.0
            clo += wneg[i] if r < lo else 0.0
            cdu += wneg[i] if r > c else 0.0
            rmin, rmax = min(rmin, r), max(rmax, r)
        parts[ci, 0], parts[ci, 1], parts[ci, 2], parts[ci, 3] = pg_s, kl_s, ent_s, w_s
        parts[ci, 4], parts[ci, 5], parts[ci, 6], parts[ci, 7] = wr_s, nlr_s, chi, clo
        parts[ci, 8], parts[ci, 9], parts[ci, 10] = cdu, rmin, rmax


def fused(lp, ent, old, pos, neg, w, wpos, wneg, ref, params):
    """Per-token tensors [N] (CPU, fp32/fp64) -> (parts [chunks, 11] float64, d loss/d lp, d loss/d entropy)."""
    n = lp.shape[0]
    dlp, dent = torch.empty_like(lp), torch.empty_like(lp)
    parts = torch.empty(max(1, -(-n // CHUNK)), len(PARTS), dtype=torch.float64)
    lo, hi, c = params.bounds
    arrays = [t.detach().numpy() for t in (lp, ent, old, pos, neg, w, wpos, wneg)]
    ref_np = (ref if ref is not None else lp).detach().numpy()
    _fused(*arrays, ref_np, ref is not None, params.kl_code, lo, hi, c, float(params.kl_coef),
           float(params.entropy_coef), dlp.numpy(), dent.numpy(), parts.numpy())
    return parts, dlp, dent
