"""flatten_trees and pack_trees on the active implementation: hand-computed arrays, and properties over random
trees (hypothesis): every path appears once in the flat batch, every unique token once in the packed batch,
and for any per-token function g and any estimator's advantages the packed sums equal the flat sums (DESIGN.md,
"Tree packing is exact")."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arpo.algos.advantages import ESTIMATORS
from arpo.tree import AGG_MODES, TrajectoryTree, flatten_trees, pack_trees
from arpo_kernels import flat_weights

from .treegen import build, forest_specs, leaf_adv, packed_prefix_hashes, prefix_hashes

ADV = [[1.0, -1.0, 0.0]]  # leaf advantages of small_tree's leaves c, d, e


def small_tree(rewards=(1.0, 0.0, 0.5)):
    """prompt [1 2 3] -> a=[4 5] -> b=[6] (tool) -> {c=[7 8], d=[9]}; a -> e=[10]."""
    t = TrajectoryTree([1, 2, 3])
    a = t.add(0, [4, 5], True, [-0.5, -0.25])
    b = t.add(a, [6], False)
    c, d = t.add(b, [7, 8], True, [-1.0, -2.0]), t.add(b, [9], True)
    e = t.add(a, [10], True, [-3.0])
    for leaf, r in zip((c, d, e), rewards):
        t.set_reward(leaf, r)
    return t


def test_flat_batch_by_hand():
    f = flatten_trees([small_tree()], ADV, "soft", pad_id=99)
    np.testing.assert_array_equal(f.input_ids, [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 9, 99],
                                                [1, 2, 3, 4, 5, 10, 99, 99]])
    np.testing.assert_array_equal(f.attention_mask.sum(1), [8, 7, 6])
    np.testing.assert_array_equal(f.position_ids[1], [0, 1, 2, 3, 4, 5, 6, 0])
    np.testing.assert_array_equal(f.loss_mask[0], [0, 0, 0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(f.advantages, [[0, 0, 0, 1, 1, 0, 1, 1], [0, 0, 0, -1, -1, 0, -1, 0],
                                                 [0, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(f.old_logprobs[0], [0, 0, 0, -0.5, -0.25, 0, -1, -2])
    assert np.isnan(f.old_logprobs[1, 6])  # d was added without sampler log-probs
    np.testing.assert_array_equal(f.leaf_index, [[0, 3], [0, 4], [0, 5]])
    assert f.input_ids.dtype == np.int64 and f.advantages.dtype == np.float32 and f.loss_mask.dtype == bool


def test_packed_batch_by_hand():
    p = pack_trees([small_tree()], ADV, "soft", "token-mean")
    np.testing.assert_array_equal(p.input_ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(p.position_ids, [0, 1, 2, 3, 4, 5, 6, 7, 6, 5])
    np.testing.assert_array_equal(p.prev_index, [-1, 0, 1, 2, 3, 4, 5, 6, 5, 4])
    np.testing.assert_array_equal(p.span_end, [10, 10, 10, 10, 10, 9, 8, 8, 9, 10])
    # 10 loss tokens over the three rows (4 + 3 + 3): w = 0.1; a's tokens have 3 copies
    np.testing.assert_allclose(p.loss_weight, [0, 0, 0, .3, .3, 0, .1, .1, .1, .1], rtol=1e-7)
    np.testing.assert_allclose(p.adv_pos, [0, 0, 0, .1, .1, 0, .1, .1, 0, 0], rtol=1e-7)
    np.testing.assert_allclose(p.adv_neg, [0, 0, 0, -.1, -.1, 0, 0, 0, -.1, 0], rtol=1e-7)
    np.testing.assert_allclose(p.weight_pos, [0, 0, 0, .1, .1, 0, .1, .1, 0, 0], rtol=1e-7)
    np.testing.assert_allclose(p.weight_neg, [0, 0, 0, .1, .1, 0, 0, 0, .1, 0], rtol=1e-7)
    np.testing.assert_array_equal(p.tree_offsets, [0, 10])


def test_packed_seq_mean_token_mean_by_hand():
    p = pack_trees([small_tree()], ADV, "soft", "seq-mean-token-mean")
    # rows: c has 4 loss tokens, d 3, e 3; S = 3 -> w_c = 1/12, w_d = w_e = 1/9
    np.testing.assert_allclose(p.loss_weight[3:5], [1 / 12 + 2 / 9] * 2, rtol=1e-7)
    np.testing.assert_allclose(p.adv_pos[3], 1 / 12, rtol=1e-7)
    np.testing.assert_allclose(p.adv_neg[3], -1 / 9, rtol=1e-7)


def test_packed_hard_credit_by_hand():
    p = pack_trees([small_tree()], [[1.0, 0.5, -3.0]], "hard", "seq-mean-token-sum")
    # every row weighs 1/3; node a averages c, d, e: -0.5 over 3 copies; c 1.0, d 0.5, e -3.0 over one copy each
    np.testing.assert_allclose(p.loss_weight, [0, 0, 0, 1, 1, 0, 1 / 3, 1 / 3, 1 / 3, 1 / 3], rtol=1e-7)
    np.testing.assert_allclose(p.adv_pos, [0, 0, 0, 0, 0, 0, 1 / 3, 1 / 3, 0.5 / 3, 0], rtol=1e-7)
    np.testing.assert_allclose(p.adv_neg, [0, 0, 0, -0.5, -0.5, 0, 0, 0, 0, -1.0], rtol=1e-7)
    f = flatten_trees([small_tree()], [[1.0, 0.5, -3.0]], "hard")
    np.testing.assert_array_equal(f.advantages, [[0, 0, 0, -.5, -.5, 0, 1, 1], [0, 0, 0, -.5, -.5, 0, .5, 0],
                                                 [0, 0, 0, -.5, -.5, -3, 0, 0]])


def test_dense_mask_is_ancestors_only():
    p = pack_trees([small_tree()], ADV)
    m = p.dense_mask()
    # token 8 (node d = [9]) sees the prompt, a, b and itself, not c's tokens (6, 7) nor e's (9)
    np.testing.assert_array_equal(np.flatnonzero(m[8]), [0, 1, 2, 3, 4, 5, 8])
    np.testing.assert_array_equal(np.flatnonzero(m[9]), [0, 1, 2, 3, 4, 9])


def test_bad_arguments():
    t = small_tree()
    with pytest.raises(ValueError, match=r"unknown agg 'mean'"):
        pack_trees([t], ADV, "soft", "mean")
    with pytest.raises(ValueError, match=r"unknown credit 'x': expected 'soft' or 'hard'"):
        flatten_trees([t], ADV, "x")
    with pytest.raises(TypeError, match=r"trees\[1\] is a str"):
        pack_trees([t, "not a tree"], ADV * 2)


@pytest.mark.parametrize("builder", [flatten_trees, pack_trees])
@pytest.mark.parametrize("adv, exc, message", [
    ([[1.0, -1.0, 0.0]] * 2, ValueError, r"leaf_advantages has 2 arrays for 1 trees"),
    ([[1.0, -1.0]], ValueError, r"leaf_advantages\[0\] has 2 values for the tree's 3 leaves"),
    ([[1.0, np.nan, 0.0]], ValueError, r"leaf_advantages\[0\]\[1\] is not a finite float32"),
    ([[1.0, 0.0, -np.inf]], ValueError, r"leaf_advantages\[0\]\[2\] is not a finite float32"),
    ([[1.0, 0.0, 1e300]], ValueError, r"leaf_advantages\[0\]\[2\] is not a finite float32"),
    ([[[1.0, 0.0, 0.0]]], ValueError, r"leaf_advantages\[0\] must be 1-D, got 2 dimensions"),
    ([["a", "b", "c"]], TypeError, r"leaf_advantages\[0\] must be real numbers, got dtype <U1"),
    (None, TypeError, r"leaf_advantages must be a list of arrays \(one per tree\), got a NoneType"),
])
def test_bad_leaf_advantages_are_clear_errors(builder, adv, exc, message):
    with pytest.raises(exc, match=message):
        builder([small_tree()], adv)


def test_advantages_need_no_rewards_in_the_tree():
    t = TrajectoryTree([1])
    t.add(0, [2], True)
    np.testing.assert_array_equal(flatten_trees([t], [[0.5]]).advantages, [[0.0, 0.5]])


def test_empty_list_and_leafless_trees():
    f = flatten_trees([], [])
    assert f.input_ids.shape == (0, 1)
    p = pack_trees([TrajectoryTree([5, 6])], [[]])
    np.testing.assert_array_equal(p.input_ids, [5, 6])
    assert not p.loss_mask.any() and p.loss_weight.sum() == 0


# ---- properties over random trees ---------------------------------------------------------------------------
def g_of(h):
    return ((np.asarray(h, dtype=np.float64) % 1009) / 1009.0) - 0.37


def path_tokens(tree, leaf):
    return np.concatenate([tree.tokens(n) for n in tree.path(leaf)]).astype(np.int64)


@settings(max_examples=150, deadline=None)
@given(forest_specs())
def test_every_path_appears_once_in_the_flat_batch(specs):
    trees = [build(TrajectoryTree, s) for s in specs]
    f = flatten_trees(trees, leaf_adv(trees), "soft", pad_id=0)
    expected = sorted((ti, leaf) for ti, t in enumerate(trees) for leaf in t.leaves())
    assert sorted(map(tuple, f.leaf_index.tolist())) == expected
    for row, (ti, leaf) in enumerate(f.leaf_index.tolist()):
        n = int(f.attention_mask[row].sum())
        np.testing.assert_array_equal(f.input_ids[row, :n], path_tokens(trees[ti], leaf))
        np.testing.assert_array_equal(f.position_ids[row, :n], np.arange(n))
        assert not f.attention_mask[row, n:].any() and not f.loss_mask[row, n:].any()


@settings(max_examples=150, deadline=None)
@given(forest_specs())
def test_each_unique_token_appears_once_in_the_packed_batch(specs):
    trees = [build(TrajectoryTree, s) for s in specs]
    p = pack_trees(trees, leaf_adv(trees))
    assert p.num_tokens == sum(t.num_tokens(unique=True) for t in trees)
    for ti, t in enumerate(trees):
        lo, hi = p.tree_offsets[ti], p.tree_offsets[ti + 1]
        assert sorted(p.input_ids[lo:hi].tolist()) == sorted(
            np.concatenate([t.tokens(n) for n in range(t.num_nodes)]).tolist())
        assert p.loss_mask[lo:hi].sum() == sum(t.tokens(n).size for n in range(t.num_nodes) if t.is_trainable(n))
    # Each token's predecessor chain spells a path prefix of the right length, and no two packed tokens of a
    # tree stand for the same (node, offset): distinct chains.
    h = packed_prefix_hashes(p)
    flat_prefixes = set()
    for t in trees:
        for leaf in t.leaves():
            flat_prefixes.update(prefix_hashes(path_tokens(t, leaf)))
    leafless = {h_ for t in trees if not t.leaves() for h_ in prefix_hashes(t.tokens(0))}
    assert set(h.tolist()) <= flat_prefixes | leafless
    depth = np.zeros(p.num_tokens, dtype=np.int64)
    for q in range(p.num_tokens):
        depth[q] = 0 if p.prev_index[q] < 0 else depth[p.prev_index[q]] + 1
    np.testing.assert_array_equal(depth, p.position_ids)


def check_packed_equals_flat(trees, adv, credit, agg):
    f = flatten_trees(trees, adv, credit, pad_id=0)
    p = pack_trees(trees, adv, credit, agg)
    w = flat_weights(torch.from_numpy(f.loss_mask), agg).numpy()  # the flat aggregation of the loss kernels
    a = f.advantages.astype(np.float64)
    g_flat = np.zeros(f.input_ids.shape)
    for row in range(f.num_rows):
        n = int(f.attention_mask[row].sum())
        g_flat[row, :n] = g_of(prefix_hashes(f.input_ids[row, :n]))
    g_packed = g_of(packed_prefix_hashes(p))
    pairs = [
        (w * g_flat, p.loss_weight * g_packed),
        (w * a * g_flat, (p.adv_pos.astype(np.float64) + p.adv_neg) * g_packed),
        (w * np.maximum(a, 0) * g_flat, p.adv_pos * g_packed),
        (w * np.minimum(a, 0) * g_flat, p.adv_neg * g_packed),
        (w * (a > 0) * g_flat, p.weight_pos * g_packed),
        (w * (a < 0) * g_flat, p.weight_neg * g_packed),
    ]
    for flat_terms, packed_terms in pairs:
        # float32 storage of each advantage and weight: relative error <= 2^-24 per term (plus the float32
        # rounding of the summed weights), so the sums agree to ~1e-7 of the summed magnitudes.
        scale = np.abs(flat_terms).sum() + 1e-30
        assert abs(flat_terms.sum() - packed_terms.sum()) <= 1e-6 * scale
    # Each token keeps its loss flag and sampler log-prob: the same (prefix, flag, log-prob) triples on both sides.
    def triples(hashes, loss, lps):
        return {(int(h), bool(m), -1e9 if np.isnan(x) else float(x)) for h, m, x in zip(hashes, loss, lps)}

    real = f.attention_mask.astype(bool)
    flat_h = np.array([h for row in range(f.num_rows) for h in prefix_hashes(f.input_ids[row, real[row]])])
    flat_set = triples(flat_h, f.loss_mask[real], f.old_logprobs[real])
    packed_set = triples(packed_prefix_hashes(p), p.loss_mask, p.old_logprobs)
    leafless = [t for t in trees if not t.leaves()]
    assert flat_set == packed_set or (leafless and flat_set <= packed_set)


@pytest.mark.parametrize("credit", ["soft", "hard"])
@pytest.mark.parametrize("agg", AGG_MODES)
@settings(max_examples=100, deadline=None)
@given(specs=forest_specs(), estimator=st.sampled_from(tuple(ESTIMATORS)))
def test_packed_sums_equal_flat_sums(specs, estimator, credit, agg):
    trees = [build(TrajectoryTree, s) for s in specs]
    check_packed_equals_flat(trees, leaf_adv(trees, estimator), credit, agg)
