"""TrajectoryTree — the bookkeeping of branched rollouts — and the batch builders over many trees.

`TrajectoryTree` is the C++ core (`arpo._tree`, built from csrc/) unless ARPO_PURE_PYTHON=1 is set or the
extension is missing (then a warning, once); the pure-Python class `arpo.tree.py_tree.TrajectoryTree` is the
documented API and behaves identically. `IMPLEMENTATION` says which one is active ("cpp" or "python").

The batch builders take the trees and their leaf advantages (one float64 array per tree, in leaves() order:
what an estimator of `arpo.algos.advantages` returns for the trees' `leaf_rewards()`), and assign them to
tokens by `credit`: "soft" (every token of leaf i's path carries Â_i) or "hard" (a token shared by several
leaves carries their mean Â).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

from . import py_batch, py_tree
from .batch import FlatBatch, PackedBatch, batch_from_dict
from .py_tree import AGG_MODES, CREDITS

_cpp = None
if os.environ.get("ARPO_PURE_PYTHON", "") not in ("", "0"):
    IMPLEMENTATION = "python"
else:
    try:
        from .. import _tree as _cpp
        IMPLEMENTATION = "cpp"
    except ImportError as exc:  # pragma: no cover - depends on the build
        warnings.warn(f"arpo._tree (C++ core) is unavailable ({exc}); using the pure-Python TrajectoryTree",
                      RuntimeWarning, stacklevel=2)
        IMPLEMENTATION = "python"

TrajectoryTree = _cpp.TrajectoryTree if IMPLEMENTATION == "cpp" else py_tree.TrajectoryTree


def _backend(trees: Sequence):
    """The module (C++ or Python) that owns these trees; a mixed list is refused by that module."""
    if _cpp is not None and trees and isinstance(trees[0], _cpp.TrajectoryTree):
        return _cpp
    if trees and isinstance(trees[0], py_tree.TrajectoryTree):
        return py_batch
    if not trees:
        return _cpp if IMPLEMENTATION == "cpp" else py_batch
    raise TypeError(f"trees[0] is a {type(trees[0]).__name__}, not a TrajectoryTree")


def flatten_trees(trees: Sequence, leaf_advantages: Sequence, credit: str = "soft", pad_id: int = 0) -> FlatBatch:
    """One row per root-to-leaf path over `trees` (one tree per prompt); see FlatBatch for the arrays.
    `leaf_advantages[i]`: tree i's leaf advantages in leaves() order."""
    trees = list(trees)
    return batch_from_dict(FlatBatch, _backend(trees).flatten_trees(trees, leaf_advantages, credit, pad_id))


def pack_trees(trees: Sequence, leaf_advantages: Sequence, credit: str = "soft", agg: str = "token-mean"
               ) -> PackedBatch:
    """Each unique token once, with weights that reproduce the flat `agg` aggregate exactly; see PackedBatch.
    `leaf_advantages[i]`: tree i's leaf advantages in leaves() order."""
    trees = list(trees)
    return batch_from_dict(PackedBatch, _backend(trees).pack_trees(trees, leaf_advantages, credit, agg))


__all__ = ["AGG_MODES", "CREDITS", "FlatBatch", "IMPLEMENTATION", "PackedBatch", "TrajectoryTree",
           "flatten_trees", "pack_trees"]
