"""Which implementation arpo.tree uses: the C++ core unless ARPO_PURE_PYTHON=1 (make test runs both)."""
import os

import arpo.tree as tree
from arpo.tree import py_tree


def test_active_implementation_matches_environment():
    pure = os.environ.get("ARPO_PURE_PYTHON", "") not in ("", "0")
    if pure:
        assert tree.IMPLEMENTATION == "python"
        assert tree.TrajectoryTree is py_tree.TrajectoryTree
    else:
        from arpo import _tree  # the extension must be built: a missing build is a failure here, not a skip

        assert tree.IMPLEMENTATION == "cpp"
        assert tree.TrajectoryTree is _tree.TrajectoryTree
