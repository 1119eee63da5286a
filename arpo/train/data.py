"""The order in which training steps see the training prompts. The prompts themselves (the examples of
``data.train`` / ``data.test``, tokenised once up front; a prompt over ``data.max_prompt_tokens`` is an error
naming its row before any training) are ``arpo.envs.datasets.load_prompts``', shared with evaluation and
re-exported here with ``Prompt``.

The embedded tasks are always their canonical version (generator seed 0): ``train.seed`` changes the order
and the sampling, never the questions (a seed-1 kbqa would ask about companies the seed-0 search index does
not hold).

Order: epoch e is a permutation of the examples drawn from (seed, e); step s takes positions
[s·B, (s+1)·B) of the concatenated epochs (B = train.batch_size), so the prompts of a step depend on the step
alone: a resumed run sees exactly what an uninterrupted one would. Under data parallelism rank r takes the
r-th of ``world`` equal slices of the step's B prompts.
"""
from __future__ import annotations

import functools

import numpy as np

from ..envs.datasets import Prompt, load_prompts  # noqa: F401 (load_prompts: re-exported for the trainer)


def step_prompts(prompts: list[Prompt], step: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1) -> list[Prompt]:
    """The prompts of training step ``step`` (0-based) for ``rank`` of ``world``."""
    if batch_size % world:
        raise ValueError(f"train.batch_size = {batch_size} must be divisible by the number of ranks ({world})")
    n = len(prompts)
    per_rank = batch_size // world
    out = []
    for pos in range(step * batch_size + rank * per_rank, step * batch_size + (rank + 1) * per_rank):
        epoch, i = divmod(pos, n)
        out.append(prompts[int(_permutation(n, seed, epoch)[i])])
    return out


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)
