"""The C++ core and the pure-Python fallback agree exactly: same trees, same arrays bit for bit, same errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arpo import _tree as cpp  # the extension is part of the build: missing is a failure, not a skip
from arpo.algos.advantages import ESTIMATORS
from arpo.tree import AGG_MODES, py_batch, py_tree

from .treegen import build, forest_specs, leaf_adv


def assert_same_arrays(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


@settings(max_examples=150, deadline=None)
@given(forest_specs(), st.sampled_from(tuple(ESTIMATORS)), st.sampled_from(["soft", "hard"]),
       st.sampled_from(AGG_MODES))
def test_identical_arrays(specs, estimator, credit, agg):
    ct = [build(cpp.TrajectoryTree, s) for s in specs]
    pt = [build(py_tree.TrajectoryTree, s) for s in specs]
    for c, p in zip(ct, pt):
        assert c.to_dict() == p.to_dict()
        assert c.leaves() == p.leaves() and c.num_tokens(False) == p.num_tokens(False)
        np.testing.assert_array_equal(c.leaf_rewards(), p.leaf_rewards(), strict=True)
    adv = leaf_adv(pt, estimator)
    for c, p, a in zip(ct, pt, adv):
        np.testing.assert_array_equal(c.node_advantages(a), p.node_advantages(a), strict=True)
    assert_same_arrays(cpp.flatten_trees(ct, adv, credit, 7), py_batch.flatten_trees(pt, adv, credit, 7))
    assert_same_arrays(cpp.pack_trees(ct, adv, credit, agg), py_batch.pack_trees(pt, adv, credit, agg))


@settings(max_examples=50, deadline=None)
@given(forest_specs(max_trees=1))
def test_dicts_cross_between_implementations(specs):
    data = build(cpp.TrajectoryTree, specs[0]).to_dict()
    assert py_tree.TrajectoryTree.from_dict(data).to_dict() == data
    assert cpp.TrajectoryTree.from_dict(py_tree.TrajectoryTree.from_dict(data).to_dict()).to_dict() == data


BAD_CALLS = [
    lambda t: t.add(7, [1], True),
    lambda t: t.extend(1, [1]),
    lambda t: t.extend(2, [1]),
    lambda t: t.extend(3, [1], [-1.0]),
    lambda t: t.set_reward(1, 0.0),
    lambda t: t.set_reward(2, float("nan")),
    lambda t: t.add(2, [3, 2**40], True),
    lambda t: t.add(2, np.array([1.0]), True),
    lambda t: t.add(2, [[1]], True),
    lambda t: t.add(2, [1, 2], True, [0.0]),
    lambda t: t.add(2, [1], False, [0.0]),
    lambda t: t.add(2, [1], True, [float("-inf")]),
    lambda t: t.leaf_rewards(),
    lambda t: t.node_advantages([0.0]),
    lambda t: t.node_advantages([0.0, float("nan")]),
    lambda t: t.node_advantages([0.0, 4e38]),
    lambda t: t.node_advantages([[0.0, 1.0]]),
    lambda t: t.node_advantages(["x", "y"]),
]


@pytest.mark.parametrize("call", BAD_CALLS)
def test_identical_errors(call):
    errors = []
    for cls in (cpp.TrajectoryTree, py_tree.TrajectoryTree):
        t = cls([1, 2])
        a = t.add(0, [3], True)
        t.add(a, [4], True, [-0.5])
        t.add(0, [5], False)
        with pytest.raises(Exception) as info:
            call(t)
        errors.append((info.type, str(info.value)))
    assert errors[0] == errors[1]


BAD_BATCH_ARGS = [  # (credit, leaf_advantages) for a forest of two trees with 2 and 1 leaves
    ("soft", [[0.0, 1.0]]),
    ("hard", [[0.0, 1.0], [0.0, 1.0]]),
    ("soft", [[0.0, 1.0], [float("nan")]]),
    ("hard", [[0.0, float("-inf")], [0.0]]),
    ("soft", [[0.0, 1.0], [1e39]]),
    ("soft", [[0.0, 1.0], [[0.0]]]),
    ("soft", [[0.0, 1.0], ["x"]]),
    ("soft", np.zeros((2, 2))),
    ("soft", None),
    ("soft", {0: [0.0, 1.0]}),
    ("medium", [[0.0, 1.0], [0.0]]),
]


@pytest.mark.parametrize("builder", ["flatten_trees", "pack_trees"])
@pytest.mark.parametrize("credit, adv", BAD_BATCH_ARGS)
def test_identical_batch_errors(builder, credit, adv):
    errors = []
    for cls, mod in ((cpp.TrajectoryTree, cpp), (py_tree.TrajectoryTree, py_batch)):
        t, u = cls([1, 2]), cls([1])
        a = t.add(0, [3], True)
        t.add(a, [4], True, [-0.5])
        t.add(0, [5], False)
        u.add(0, [6], True)
        with pytest.raises(Exception) as info:
            getattr(mod, builder)([t, u], adv, credit)
        errors.append((info.type, str(info.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("builder", ["flatten_trees", "pack_trees"])
def test_mixed_implementations_are_refused(builder):
    c, p = cpp.TrajectoryTree([1]), py_tree.TrajectoryTree([1])
    with pytest.raises(TypeError, match="do not mix the C\\+\\+ and Python implementations"):
        getattr(cpp, builder)([c, p], [[], []])
    with pytest.raises(TypeError, match="do not mix the C\\+\\+ and Python implementations"):
        getattr(py_batch, builder)([p, c], [[], []])


@pytest.mark.parametrize("cls", [cpp.TrajectoryTree, py_tree.TrajectoryTree])
def test_wrong_argument_types_are_refused(cls):
    t = cls([1])
    with pytest.raises(TypeError):
        t.add(0.0, [2], True)
    with pytest.raises(TypeError):
        t.add(0, [2], "False")
    leaf = t.add(np.int64(0), [2], True)
    assert type(t.parent(leaf)) is int and t.to_dict()["nodes"][0]["parent"] == 0
    with pytest.raises(TypeError):
        t.set_reward(leaf, "1.0")


@pytest.mark.parametrize("node, message", [
    ({"parent": 0.0, "tokens": [2], "trainable": True, "logprobs": None, "reward": None}, "key 'parent' must be an int"),
    ({"parent": "0", "tokens": [2], "trainable": True, "logprobs": None, "reward": None}, "key 'parent' must be an int"),
    ({"parent": 0, "tokens": [2], "trainable": "false", "logprobs": None, "reward": None},
     "key 'trainable' must be a bool"),
])
def test_from_dict_type_errors_match(node, message):
    errors = []
    for cls in (cpp.TrajectoryTree, py_tree.TrajectoryTree):
        with pytest.raises(ValueError) as info:
            cls.from_dict({"prompt": [1], "nodes": [node]})
        errors.append(str(info.value))
    assert errors[0] == errors[1] == f"tree dict node 1 {message}"
