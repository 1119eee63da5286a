"""The TrajectoryTree API on the active implementation: building, reading, serialising, and bad use."""
import pickle

import numpy as np
import pytest

from arpo.tree import TrajectoryTree


def small_tree():
    """prompt [1 2 3] -> a=[4 5] (model) -> b=[6] (tool) -> {c=[7 8] (model), d=[9] (model)}; e=[10] under a."""
    t = TrajectoryTree([1, 2, 3])
    a = t.add(0, [4, 5], True, [-0.5, -0.25])
    b = t.add(a, np.array([6], dtype=np.int64), False)
    c = t.add(b, [7, 8], True, [-1.0, -2.0])
    d = t.add(b, [9], True, [-0.125])
    e = t.add(a, [10], True, [-3.0])
    return t, (a, b, c, d, e)


def test_structure_and_reading():
    t, (a, b, c, d, e) = small_tree()
    assert (a, b, c, d, e) == (1, 2, 3, 4, 5)
    assert t.num_nodes == 6
    assert t.leaves() == [c, d, e]
    assert t.path(d) == [0, a, b, d]
    assert t.children(a) == [b, e] and t.parent(c) == b
    assert t.offset(c) == 6 and t.offset(e) == 5
    assert t.is_trainable(a) and not t.is_trainable(b) and not t.is_trainable(0)
    np.testing.assert_array_equal(t.tokens(c), [7, 8])
    assert t.tokens(c).dtype == np.int32
    np.testing.assert_array_equal(t.logprobs(c), np.array([-1.0, -2.0], np.float32))
    assert t.logprobs(b) is None
    assert t.num_tokens(unique=True) == 10
    assert t.num_tokens(unique=False) == 8 + 7 + 6  # paths 1..8, 1..6+9, 1..5+10


def test_extend_streams_into_the_newest_node():
    t = TrajectoryTree([1])
    n = t.add(0, [], True)
    t.extend(n, [2, 3], [-0.1, -0.2])
    t.extend(n, [4], [-0.3])
    t.extend(n, [])
    np.testing.assert_array_equal(t.tokens(n), [2, 3, 4])
    np.testing.assert_allclose(t.logprobs(n), [-0.1, -0.2, -0.3], rtol=1e-7)
    root_only = TrajectoryTree([1])
    root_only.extend(0, [5, 6])  # the prompt may grow while it has no children
    np.testing.assert_array_equal(root_only.tokens(0), [1, 5, 6])
    assert root_only.leaves() == []


def test_reward_round_trip_and_overwrite():
    t, (a, b, c, d, e) = small_tree()
    assert t.reward(c) is None
    t.set_reward(c, 1.0)
    t.set_reward(c, 0.5)
    assert t.reward(c) == 0.5


def test_to_dict_round_trip_and_pickle():
    t, (a, b, c, d, e) = small_tree()
    for leaf, r in zip((c, d, e), (1.0, 0.0, 0.25)):
        t.set_reward(leaf, r)
    data = t.to_dict()
    assert data["prompt"] == [1, 2, 3]
    assert data["nodes"][1] == {"parent": 1, "tokens": [6], "trainable": False, "logprobs": None, "reward": None}
    assert data["nodes"][2]["reward"] == 1.0
    again = TrajectoryTree.from_dict(data)
    assert again.to_dict() == data
    assert pickle.loads(pickle.dumps(t)).to_dict() == data
    np.testing.assert_array_equal(again.leaf_rewards(), t.leaf_rewards())


# ---- bad use: clear errors, and the tree is unchanged afterwards -------------------------------------------
@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda t: t.add(9, [1], True), IndexError, r"node 9 does not exist \(the tree has 6 nodes\)"),
        (lambda t: t.add(-1, [1], True), IndexError, r"node -1 does not exist"),
        (lambda t: t.extend(2, [1]), ValueError, r"cannot extend node 2: it already has children"),
        (lambda t: t.extend(1, [1], [-0.1]), ValueError, r"cannot extend node 1: it already has children"),
        (lambda t: t.set_reward(1, 1.0), ValueError, r"node 1 is not a leaf"),
        (lambda t: t.set_reward(0, 1.0), ValueError, r"node 0 is not a leaf"),
        (lambda t: t.set_reward(3, float("nan")), ValueError, r"reward for leaf 3 is not finite"),
        (lambda t: t.set_reward(3, float("inf")), ValueError, r"reward for leaf 3 is not finite"),
        (lambda t: t.add(3, [2**31], True), ValueError, r"token id 2147483648 at index 0 is outside the int32 range"),
        (lambda t: t.add(3, [5, -1], True), ValueError, r"token id -1 at index 1 is outside the int32 range"),
        (lambda t: t.add(3, [1.5], True), TypeError, r"token ids must be integers, got dtype float64"),
        (lambda t: t.add(3, [[1, 2]], True), ValueError, r"token ids must be 1-D, got 2 dimensions"),
        (lambda t: t.add(3, [1, 2], True, [-0.1]), ValueError, r"logprobs has 1 values for 2 token ids"),
        (lambda t: t.add(3, [1], True, [float("nan")]), ValueError, r"logprob at index 0 is not a finite float32"),
        (lambda t: t.add(3, [1], True, [-1e300]), ValueError, r"logprob at index 0 is not a finite float32"),
        (lambda t: t.set_reward(3, 1e31), ValueError, r"reward for leaf 3 is not finite or exceeds 1e30"),
        (lambda t: t.add(3, [1], False, [-0.1]), ValueError, r"logprobs given for a context \(non-trainable\) node 6"),
        (lambda t: t.extend(3, [1]), ValueError, r"node 3 was started with logprobs"),
        (lambda t: t.leaf_rewards(), ValueError, r"leaf 3 has no reward: call set_reward\(\) on every leaf first"),
        (lambda t: t.node_advantages([0.0]), ValueError, r"leaf_advantages has 1 values for the tree's 3 leaves"),
    ],
)
def test_bad_use_is_a_clear_error_and_changes_nothing(call, exc, message):
    t, _ = small_tree()
    before = t.to_dict()
    with pytest.raises(exc, match=message):
        call(t)
    assert t.to_dict() == before


def test_extend_with_children_fails_and_mixing_logprobs_fails():
    t = TrajectoryTree([1])
    n = t.add(0, [2], True)  # started without logprobs
    with pytest.raises(ValueError, match=r"node 1 was started without logprobs"):
        t.extend(n, [3], [-0.5])
    with pytest.raises(ValueError, match=r"cannot extend node 0: it already has children"):
        t.extend(0, [4])


def test_finished_leaf_cannot_grow():
    t = TrajectoryTree([1])
    n = t.add(0, [2], True)
    t.set_reward(n, 1.0)
    with pytest.raises(ValueError, match=r"cannot extend node 1: it has a reward, so it is a finished leaf"):
        t.extend(n, [3])
    with pytest.raises(ValueError, match=r"cannot branch from node 1: it has a reward"):
        t.add(n, [3], True)


def test_empty_prompt():
    with pytest.raises(ValueError, match=r"prompt_ids is empty"):
        TrajectoryTree([])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": [1]}, r"tree dict is missing key 'nodes'"),
        ({"prompt": [1], "nodes": [], "extra": 1}, r"tree dict has unknown key 'extra'"),
        ({"prompt": [1], "nodes": [{"parent": 1, "tokens": [2], "trainable": True, "logprobs": None,
                                    "reward": None}]}, r"node 1 has parent 1: a parent must come before its child"),
        ({"prompt": [1], "nodes": [{"parent": 0, "tokens": [2], "trainable": True, "logprobs": None}]},
         r"tree dict node 1 is missing key 'reward'"),
        ({"prompt": [1], "nodes": [{"parent": 0, "tokens": [2], "trainable": True, "logprobs": None,
                                    "reward": 1.0},
                                   {"parent": 1, "tokens": [3], "trainable": True, "logprobs": None,
                                    "reward": 1.0}]}, r"node 1 is not a leaf"),
    ],
)
def test_from_dict_rejects_malformed_data(data, message):
    with pytest.raises(ValueError, match=message):
        TrajectoryTree.from_dict(data)
