"""Training and evaluation prompts: the examples of ``data.train`` / ``data.test``, tokenised once up front (a
prompt over ``data.max_prompt_tokens`` is an error naming its row before any training), and the order in
which training steps see them.

The embedded tasks are always their canonical version (generator seed 0): ``train.seed`` changes the order
and the sampling, never the questions (a seed-1 kbqa would ask about companies the seed-0 search index does
not hold).

Order: epoch e is a permutation of the examples drawn from (seed, e); step s takes positions
[s·B, (s+1)·B) of the concatenated epochs (B = train.batch_size), so the prompts of a step depend on the step
alone: a resumed run sees exactly what an uninterrupted one would. Under data parallelism rank r takes the
r-th of ``world`` equal slices of the step's B prompts.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from tqdm import tqdm

from ..config import ARPOConfig
from ..envs.datasets import build_prompt, load_dataset
from ..envs.example import Example


@dataclasses.dataclass(frozen=True)
class Prompt:
    example: Example
    ids: tuple[int, ...]


def load_prompts(cfg: ARPOConfig, tokenizer, split: str, *, limit: int = 0,
                 no_bar: bool | None = None) -> list[Prompt]:
    """The prompts of ``data.train`` (split "train") or ``data.test`` (split "test"); with ``limit`` > 0 at
    most that many per entry (the first ones). ``no_bar`` is tqdm's ``disable`` (None: a bar only on a terminal)."""
    entries = cfg.data.train if split == "train" else cfg.data.test
    examples: list[Example] = []
    for entry in entries:
        rows = load_dataset(entry, split)  # the tasks' canonical data: train.seed must not change the questions
        examples += rows[:limit] if limit > 0 else rows
    bar = tqdm(examples, desc=f"tokenising {split} prompts", unit="prompt", disable=no_bar, leave=False)
    return [Prompt(ex, tuple(build_prompt(tokenizer, ex, cfg.tools.enabled, cfg.data.system_prompt,
                                          cfg.data.max_prompt_tokens))) for ex in bar]


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
