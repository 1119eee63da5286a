"""The advantage-estimator registry (arpo/algos/advantages.py): each estimator against hand-computed values,
grpo against the formula the tree core used before the registry (bit for bit), input checks, and the registry."""
import math
import subprocess
import sys

import numpy as np
import pytest

from arpo.algos.advantages import ESTIMATORS, get_estimator, register_estimator


def run(name, *groups, eps=1e-6):
    return get_estimator(name)([np.array(g, dtype=np.float64) for g in groups], eps=eps)


def assert_groups(actual, expected, exact=True):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == np.float64
        if exact:
            np.testing.assert_array_equal(a, e, strict=False)
        else:
            np.testing.assert_allclose(a, e, rtol=1e-14, atol=1e-15)


# ---- hand-computed values -----------------------------------------------------------------------------------
def test_grpo_is_the_group_z_score_with_bessel_std():
    # rewards 1, 0, 0.5: mean 0.5, sample variance (0.25 + 0.25 + 0) / 2 = 0.25, std 0.5
    assert_groups(run("grpo", [1.0, 0.0, 0.5], eps=0.0), [[1.0, -1.0, 0.0]])
    assert_groups(run("grpo", [1.0, 0.0, 0.5], eps=0.5), [[0.5, -0.5, 0.0]])
    s = math.sqrt(1 / 3)  # rewards 1, 1, 0: mean 2/3, variance (1/9 + 1/9 + 4/9) / 2 = 1/3
    assert_groups(run("grpo", [1.0, 1.0, 0.0], eps=0.0), [[1 / 3 / s, 1 / 3 / s, -2 / 3 / s]], exact=False)


def test_drgrpo_only_centres():
    assert_groups(run("drgrpo", [1.0, 0.0, 0.5], [3.0, 1.0]), [[0.5, -0.5, 0.0], [1.0, -1.0]])
    assert_groups(run("drgrpo", [1.0, 0.0, 0.5], eps=0.5), [[0.5, -0.5, 0.0]])  # eps unused


def test_rloo_subtracts_the_mean_of_the_other_leaves():
    assert_groups(run("rloo", [1.0, 0.0, 0.0]), [[1.0, -0.5, -0.5]])
    # 1 - (0 + 0.5 + 0.5)/3, 0 - (1 + 0.5 + 0.5)/3, 0.5 - (1 + 0 + 0.5)/3 (twice)
    assert_groups(run("rloo", [1.0, 0.0, 0.5, 0.5]), [[2 / 3, -2 / 3, 0.0, 0.0]], exact=False)
    assert_groups(run("rloo", [3.0, 1.0]), [[2.0, -2.0]])


def test_rloo_is_drgrpo_scaled_by_n_over_n_minus_1():
    r = np.random.default_rng(0).normal(size=7)
    (a,), (b,) = run("rloo", r), run("drgrpo", r)
    np.testing.assert_allclose(a, b * 7 / 6, rtol=1e-12, atol=1e-15)


def test_reinforce_pp_whitens_the_group_centred_rewards_over_the_batch():
    # centred: [0.5, -0.5], [0, 0], [0]; over the batch mean 0, Bessel variance 0.5 / 4, std sqrt(1/8)
    out = run("reinforce_pp", [1.0, 0.0], [1.0, 1.0], [0.5], eps=0.0)
    assert_groups(out, [[math.sqrt(2), -math.sqrt(2)], [0.0, 0.0], [0.0]], exact=False)
    out = run("reinforce_pp", [1.0, 0.0], [1.0, 1.0], [0.5], eps=0.25)
    d = math.sqrt(1 / 8) + 0.25
    assert_groups(out, [[0.5 / d, -0.5 / d], [0.0, 0.0], [0.0]], exact=False)
    # a batch-level estimator: the same prompt's advantages depend on the other prompts
    alone = run("reinforce_pp", [1.0, 0.0], eps=0.0)[0]
    assert_groups([alone], [[math.sqrt(0.5), -math.sqrt(0.5)]], exact=False)


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp"])
def test_group_of_one_and_equal_rewards_give_zero(name):
    for eps in (1e-6, 0.0):  # eps = 0: 0, not 0/0
        assert_groups(run(name, [7.0], [0.5, 0.5, 0.5], [-2.0, -2.0], eps=eps), [[0.0], [0.0] * 3, [0.0] * 2])


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp"])
def test_empty_batches_and_groups(name):
    assert get_estimator(name)([], eps=1e-6) == []
    (out,) = run(name, [])
    assert out.shape == (0,) and out.dtype == np.float64


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_per_group_estimators_ignore_the_other_prompts(name):
    rng = np.random.default_rng(1)
    groups = [rng.normal(size=n) for n in (1, 3, 16)]
    together = get_estimator(name)(groups, eps=1e-6)
    for g, a in zip(groups, together):
        np.testing.assert_array_equal(get_estimator(name)([g], eps=1e-6)[0], a)


def test_the_input_arrays_are_not_changed():
    r = np.array([1.0, 0.0, 0.5])
    for name in ESTIMATORS:
        get_estimator(name)([r], eps=1e-6)
    np.testing.assert_array_equal(r, [1.0, 0.0, 0.5])


# ---- grpo = the tree core's numbers before the registry -----------------------------------------------------
def old_tree_advantages(rewards, scale_std, eps):
    """TrajectoryTree._leaf_advantages as it was (arpo/tree/py_tree.py, bit-identical to the C++ core)."""
    total = 0.0
    for r in rewards:
        total += r
    n = float(len(rewards))
    mean = total / n
    sq = 0.0
    for r in rewards:
        sq += (r - mean) * (r - mean)
    std = math.sqrt(sq / (n - 1.0)) if len(rewards) > 1 else 0.0
    centred = [r - mean for r in rewards]
    if not scale_std:
        return centred
    return [c / (std + eps) if std + eps > 0.0 else 0.0 for c in centred]


@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.3])
def test_grpo_and_drgrpo_reproduce_the_old_tree_numbers_bit_for_bit(eps):
    rng = np.random.default_rng(2)
    groups = [rng.normal(size=n) * 10.0 ** rng.integers(-3, 4) for n in (1, 2, 3, 5, 8, 9, 16, 33)]
    groups += [rng.integers(0, 2, size=16).astype(float), np.full(16, 0.1), np.array([1e30, -1e30, 3.0])]
    grpo, drgrpo = get_estimator("grpo")(groups, eps=eps), get_estimator("drgrpo")(groups, eps=eps)
    for g, a, b in zip(groups, grpo, drgrpo):
        np.testing.assert_array_equal(a, old_tree_advantages(g.tolist(), True, eps))
        np.testing.assert_array_equal(b, old_tree_advantages(g.tolist(), False, eps))


# ---- checks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rewards, eps, exc, message", [
    ([[1.0, float("nan")]], 1e-6, ValueError, r"rewards\[0\]\[1\] is nan: rewards must be finite"),
    ([[1.0], [float("-inf")]], 1e-6, ValueError, r"rewards\[1\]\[0\] is -inf: rewards must be finite"),
    ([[[1.0, 0.0]]], 1e-6, ValueError, r"rewards\[0\] must be 1-D, got 2 dimensions"),
    ([["a"]], 1e-6, TypeError, r"rewards\[0\] must be real numbers, got dtype <U1"),
    (np.zeros((2, 3)), 1e-6, TypeError, r"rewards must be a list of arrays \(one per prompt\), got a ndarray"),
    ([[1.0]], -1.0, ValueError, r"eps must be finite and >= 0, got -1.0"),
    ([[1.0]], math.nan, ValueError, r"eps must be finite and >= 0, got nan"),
    ([[1.0]], True, TypeError, r"eps must be a real number, got bool"),
])
@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp"])
def test_bad_inputs_are_clear_errors(name, rewards, eps, exc, message):
    with pytest.raises(exc, match=message):
        get_estimator(name)(rewards, eps=eps)


def test_unknown_estimator_lists_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo': expected one of 'grpo', 'drgrpo', "
                                         r"'rloo', 'reinforce_pp'"):
        get_estimator("ppo")


# ---- the registry ---------------------------------------------------------------------------------------------
def test_the_shipped_estimators():
    assert tuple(ESTIMATORS)[:4] == ("grpo", "drgrpo", "rloo", "reinforce_pp")


def test_register_a_new_estimator_and_its_checks():
    try:
        @register_estimator("test_sign")
        def sign(rewards, *, eps):
            return [np.sign(r) for r in rewards]

        assert get_estimator("test_sign") is sign and sign.__name__ == "sign"
        assert_groups(sign([[2.0, -3.0, 0.0]], eps=0.0), [[1.0, -1.0, 0.0]])
        with pytest.raises(ValueError, match=r"rewards\[0\]\[0\] is nan"):
            sign([[math.nan]], eps=0.0)
        with pytest.raises(ValueError, match=r"advantage estimator 'test_sign' is already registered"):
            register_estimator("test_sign")

        @register_estimator("test_broken")
        def broken(rewards, *, eps):
            return [np.append(r, 0.0) for r in rewards]

        with pytest.raises(RuntimeError, match=r"estimator 'test_broken' returned shape \(2,\) for prompt 0's \(1,\)"):
            broken([[1.0]], eps=0.0)
    finally:
        ESTIMATORS.pop("test_sign", None)
        ESTIMATORS.pop("test_broken", None)
    assert "test_sign" not in ESTIMATORS


def test_algos_sits_below_train_rollout_and_engines():
    code = ("import sys, arpo.algos.advantages; "
            "print(sorted(m for m in sys.modules if m.startswith(('arpo.train', 'arpo.rollout', 'arpo.engines', "
            "'arpo.tree', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
