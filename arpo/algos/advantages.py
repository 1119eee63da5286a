"""Advantage estimators, registered by name: each maps every prompt's leaf rewards to leaf advantages.

An estimator is ``fn(rewards, *, eps) -> advantages``. ``rewards`` holds one float64 array per prompt (its tree's
``leaf_rewards()``, in leaves() order) for the whole rollout batch, and the result holds one float64 array of
leaf advantages of the same shape per prompt. The batch comes whole so that an estimator may normalise over it.
The tree core then assigns the leaf advantages to tokens (``credit``: soft or hard, see arpo.tree) and builds
the flat and packed batches from them.

Adding an estimator is one function: decorate it with ``@register_estimator("name")`` and ``algo.estimator``
accepts the name. The decorator checks every call (the rewards finite, eps finite and >= 0, the result of the
same shapes and finite), so an estimator holds its math only.

Sums run left to right (``_sum``), the order in which the tree core computed GRPO advantages before this
registry existed, so ``grpo`` reproduces those numbers bit for bit.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from . import lookup, new_name

Estimator = Callable[..., list[np.ndarray]]  # (rewards: list[np.ndarray], *, eps: float) -> list[np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator: register ``fn(rewards, *, eps)`` under ``name``; returns it wrapped in the input/output checks."""
    new_name(ESTIMATORS, name, "advantage estimator")

    def decorate(fn: Estimator) -> Estimator:
        @functools.wraps(fn)
        def checked(rewards: Sequence[np.ndarray], *, eps: float) -> list[np.ndarray]:
            rewards, eps = _check_rewards(rewards), _check_eps(eps)
            return _check_result(name, rewards, fn(rewards, eps=eps))

        ESTIMATORS[name] = checked
        return checked

    return decorate


def get_estimator(name: str) -> Estimator:
    """The registered estimator ``name`` (a ValueError lists the registered names)."""
    return lookup(ESTIMATORS, name, "advantage estimator")


# ---- the estimators -----------------------------------------------------------------------------------------
@register_estimator("grpo")
def grpo(rewards: list[np.ndarray], *, eps: float) -> list[np.ndarray]:
    """GRPO (Shao et al., 2024): per prompt (r - mean) / (std + eps), Bessel-corrected std; 0 for a group of one
    (and for a group of equal rewards)."""
    return [_zscore(r, eps) for r in rewards]


@register_estimator("drgrpo")
def drgrpo(rewards: list[np.ndarray], *, eps: float) -> list[np.ndarray]:
    """Dr. GRPO (Liu et al., 2025): per prompt r - mean, no division by the std (``eps`` is unused). Its other
    change, no per-response length normalisation, is ``algo.agg: seq-mean-token-sum``."""
    return [r - _mean(r) for r in rewards]


@register_estimator("rloo")
def rloo(rewards: list[np.ndarray], *, eps: float) -> list[np.ndarray]:
    """RLOO (Ahmadian et al., 2024): r_i minus the mean reward of the prompt's other leaves; 0 for a group of one
    (``eps`` is unused)."""
    return [r - (_sum(r) - r) / (r.size - 1) if r.size > 1 else np.zeros_like(r) for r in rewards]


@register_estimator("reinforce_pp")
def reinforce_pp(rewards: list[np.ndarray], *, eps: float) -> list[np.ndarray]:
    """REINFORCE++ with a group baseline (Hu et al., 2025; verl's ``reinforce_plus_plus_baseline``): x = r - the
    prompt's mean reward, then whitened over every leaf of the batch, (x - mean) / (std + eps) with the
    Bessel-corrected std. Unlike verl this whitens per leaf, not per response token, and a group of one has
    baseline r (x = 0), not 0.

    The batch is what the caller passes: the trainer gathers the rewards of every data-parallel rank and passes the
    whole step's batch, so the result does not depend on the number of ranks."""
    centred = [r - _mean(r) for r in rewards]
    if not centred:
        return []
    whitened = _zscore(np.concatenate(centred), eps)
    return np.split(whitened, np.cumsum([c.size for c in centred])[:-1])


# ---- helpers ------------------------------------------------------------------------------------------------
def _sum(x: np.ndarray) -> float:
    """Left to right (np.sum is pairwise and Python 3.12's sum() compensated: both would change the last bits)."""
    return functools.reduce(float.__add__, x.tolist(), 0.0)


def _mean(x: np.ndarray) -> float:
    return _sum(x) / x.size if x.size else 0.0


def _zscore(x: np.ndarray, eps: float) -> np.ndarray:
    """(x - mean) / (std + eps) with the Bessel-corrected std (0 for one value); 0 where std + eps == 0 (all values
    equal and eps == 0), not 0/0."""
    centred = x - _mean(x)
    std = math.sqrt(_sum(centred * centred) / (x.size - 1)) if x.size > 1 else 0.0
    return centred / (std + eps) if std + eps > 0.0 else np.zeros_like(x)


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0.0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return float(eps)


def _check_rewards(rewards: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Fresh float64 1-D copies (an estimator may not change the caller's arrays), all finite."""
    if not isinstance(rewards, (list, tuple)):
        raise TypeError(f"rewards must be a list of arrays (one per prompt), got a {type(rewards).__name__}")
    out = []
    for i, r in enumerate(rewards):
        arr = np.asarray(r)
        if arr.ndim != 1:
            raise ValueError(f"rewards[{i}] must be 1-D, got {arr.ndim} dimensions")
        if arr.size and arr.dtype.kind not in "fiu":
            raise TypeError(f"rewards[{i}] must be real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)  # always a copy
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"rewards[{i}][{int(bad[0])}] is {arr[bad[0]]}: rewards must be finite")
        out.append(arr)
    return out


def _check_result(name: str, rewards: list[np.ndarray], adv: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(adv) != len(rewards):
        raise RuntimeError(f"estimator {name!r} returned {len(adv)} arrays for {len(rewards)} prompts")
    out = []
    for i, (r, a) in enumerate(zip(rewards, adv)):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != r.shape:
            raise RuntimeError(f"estimator {name!r} returned shape {a.shape} for prompt {i}'s {r.shape} rewards")
        if not np.isfinite(a).all():
            raise RuntimeError(f"estimator {name!r} returned a non-finite advantage for prompt {i}")
        out.append(a)
    return out
