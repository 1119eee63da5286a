"""RL algorithm pieces, registered by name, at the bottom of arpo's layering (they import numpy, torch and
arpo_kernels only; the config refers to them by name). ``advantages``: the advantage estimators (numpy);
``losses``: the policy-loss variants (torch)."""
from __future__ import annotations


def new_name(table: dict, name, what: str) -> str:
    """``name`` checked to be a new non-empty string key of the registry ``table``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} name must be a non-empty string, got {name!r}")
    if name in table:
        raise ValueError(f"{what} {name!r} is already registered")
    return name


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a ValueError listing the registered names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}: expected one of {', '.join(map(repr, table))}")
    return table[name]
