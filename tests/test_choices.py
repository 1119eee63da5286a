"""Every choice list the config offers agrees with the code that implements it (the config stays light, so it
keeps its own copies of the names; this test is what keeps them equal)."""
from __future__ import annotations

import dataclasses

from arpo import config as C


def choices(section, name: str) -> tuple:
    (f,) = [f for f in dataclasses.fields(section) if f.name == name]
    return f.metadata["choices"]


def test_loss_choices_are_the_kernel_librarys():
    import arpo_kernels.spec as spec
    from arpo.tree import AGG_MODES as TREE_AGG

    assert choices(C.AlgoConfig, "agg") == spec.AGG_MODES == TREE_AGG
    assert choices(C.AlgoConfig, "kl_type") == spec.KL_TYPES
    assert choices(C.TrainConfig, "kernel_backend") == spec.BACKENDS


def test_tasks_and_rewards_are_the_implemented_ones():
    from arpo.envs import rewards
    from arpo.envs.tasks import TASKS

    assert set(C.EMBEDDED_TASKS) == set(TASKS)
    assert set(C.REWARD_FNS) == set(rewards._BUILTIN) | {"auto", "random"}


def test_tool_formats_are_the_implemented_ones():
    from arpo.tools.formats import FORMATS

    assert choices(C.ToolsConfig, "format") == C.TOOL_FORMATS == FORMATS
