"""The tree's side of advantages: leaf rewards in leaves() order, and hard credit (per node, the mean leaf
advantage below it) against hand-computed values (DESIGN.md, "Advantages"). The estimators themselves are in
tests/algos."""
import numpy as np
import pytest

from arpo.tree import TrajectoryTree


def tree_with_rewards(rc, rd, re):
    """prompt -> a -> b(tool) -> {c, d}; a -> e. Leaves c, d, e."""
    t = TrajectoryTree([1, 2, 3])
    a = t.add(0, [4, 5], True)
    b = t.add(a, [6], False)
    c, d = t.add(b, [7, 8], True), t.add(b, [9], True)
    e = t.add(a, [10], True)
    for leaf, r in zip((c, d, e), (rc, rd, re)):
        t.set_reward(leaf, r)
    return t


def test_leaf_rewards_in_leaves_order():
    t = tree_with_rewards(1.0, 0.0, 0.5)
    assert t.leaves() == [3, 4, 5]
    r = t.leaf_rewards()
    assert r.dtype == np.float64
    np.testing.assert_array_equal(r, [1.0, 0.0, 0.5])
    assert TrajectoryTree([1]).leaf_rewards().shape == (0,)


def test_hard_credit_is_the_mean_over_leaves_below_each_node():
    t = tree_with_rewards(0.0, 0.0, 0.0)
    # node ids: 0 root, 1 a (leaves c d e), 2 b (leaves c d), 3 c, 4 d, 5 e
    np.testing.assert_array_equal(t.node_advantages([1.0, 0.5, -3.0]), [-0.5, -0.5, 0.75, 1.0, 0.5, -3.0])
    np.testing.assert_array_equal(t.node_advantages(np.array([2, 2, 2])), [2.0] * 6)  # ints accepted


def test_single_leaf_and_leafless_trees():
    one = TrajectoryTree([1])
    one.add(0, [2], True)
    np.testing.assert_array_equal(one.node_advantages([0.25]), [0.25, 0.25])
    np.testing.assert_array_equal(TrajectoryTree([1, 2]).node_advantages([]), [0.0])


@pytest.mark.parametrize("adv, exc, message", [
    ([1.0, 2.0], ValueError, r"leaf_advantages has 2 values for the tree's 3 leaves"),
    ([1.0, float("nan"), 0.0], ValueError, r"leaf_advantages\[1\] is not a finite float32"),
    ([1.0, 0.0, 1e39], ValueError, r"leaf_advantages\[2\] is not a finite float32"),
    ([[1.0, 0.0, 0.0]], ValueError, r"leaf_advantages must be 1-D, got 2 dimensions"),
    (["a", "b", "c"], TypeError, r"leaf_advantages must be real numbers, got dtype <U1"),
])
def test_bad_leaf_advantages(adv, exc, message):
    with pytest.raises(exc, match=message):
        tree_with_rewards(1.0, 0.0, 0.5).node_advantages(adv)


def test_missing_reward_is_a_clear_error():
    t = TrajectoryTree([1])
    t.set_reward(t.add(0, [2], True), 1.0)
    t.add(0, [3], True)
    with pytest.raises(ValueError, match=r"leaf 2 has no reward: call set_reward\(\) on every leaf first"):
        t.leaf_rewards()
