"""Group-normalised advantages, soft and hard, against hand-computed values (DESIGN.md, "Advantages")."""
import math

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


def test_soft_is_z_score_with_bessel_std():
    # rewards 1, 0, 0.5: mean 0.5, sample variance (0.25 + 0.25 + 0) / 2 = 0.25, std 0.5
    t = tree_with_rewards(1.0, 0.0, 0.5)
    np.testing.assert_array_equal(t.advantages("soft", eps=0.0), [1.0, -1.0, 0.0])
    np.testing.assert_allclose(t.advantages("soft", eps=0.5), [0.5, -0.5, 0.0], rtol=1e-15)
    np.testing.assert_array_equal(t.advantages("soft", scale_std=False), [0.5, -0.5, 0.0])


def test_soft_unequal_groups():
    # rewards 1, 1, 0: mean 2/3, variance (1/9 + 1/9 + 4/9) / 2 = 1/3
    t = tree_with_rewards(1.0, 1.0, 0.0)
    s = math.sqrt(1 / 3)
    np.testing.assert_allclose(t.advantages("soft", eps=0.0), [1 / 3 / s, 1 / 3 / s, -2 / 3 / s], rtol=1e-14)


def test_hard_is_mean_over_leaves_below_each_node():
    t = tree_with_rewards(1.0, 1.0, 0.0)
    s = math.sqrt(1 / 3)
    a_c, a_e = 1 / 3 / s, -2 / 3 / s
    # node ids: 0 root, 1 a (leaves c d e), 2 b (leaves c d), 3 c, 4 d, 5 e
    expected = [(2 * a_c + a_e) / 3, (2 * a_c + a_e) / 3, a_c, a_c, a_c, a_e]
    np.testing.assert_allclose(t.advantages("hard", eps=0.0), expected, rtol=1e-14, atol=1e-15)


def test_equal_rewards_and_single_leaf_give_zero():
    t = tree_with_rewards(0.5, 0.5, 0.5)
    np.testing.assert_array_equal(t.advantages("soft"), [0.0, 0.0, 0.0])
    one = TrajectoryTree([1])
    one.set_reward(one.add(0, [2], True), 7.0)
    np.testing.assert_array_equal(one.advantages("soft"), [0.0])
    np.testing.assert_array_equal(one.advantages("hard"), [0.0, 0.0])


def test_tree_without_leaves_has_no_advantages():
    t = TrajectoryTree([1, 2])
    assert t.advantages("soft").shape == (0,)
    np.testing.assert_array_equal(t.advantages("hard"), [0.0])


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_advantages_sum_to_zero_over_leaves(mode):
    rng = np.random.default_rng(0)
    t = TrajectoryTree([1])
    nodes = [0]
    for _ in range(30):
        nodes.append(t.add(int(rng.choice(nodes)), [3], True))
    for leaf in t.leaves():
        t.set_reward(leaf, float(rng.normal()))
    soft = t.advantages("soft")
    assert abs(soft.sum()) < 1e-12
    assert soft.std(ddof=1) == pytest.approx(1.0, rel=1e-5)  # eps = 1e-6 against std ~ 1
    if mode == "hard":
        assert t.advantages("hard")[0] == pytest.approx(0.0, abs=1e-12)  # the root averages every leaf
