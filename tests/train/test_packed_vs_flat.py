"""Tree-packed and flat updates on the demo model: the same loss and the same parameter gradients (fp32), for
every aggregation mode, credit (soft/hard), advantage estimator and micro-batch split; and both equal a plain
full-logits reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from arpo.algos.advantages import ESTIMATORS, get_estimator
from arpo.tree import TrajectoryTree
from arpo.tree.synthetic import build_tree, rollout_script
from arpo.models import load_causal_lm
from arpo.train.microbatch import micro_batches
from arpo.train.policy import PolicyLogprobs, packed_attention_mask, tree_mask
from arpo.train.update import micro_batch_loss
from arpo.config import AlgoConfig
from arpo_kernels import policy_loss

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"
AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_causal_lm(str(DEMO))


TEMP = 0.7


def _path_logprobs(model, ids: list[int]) -> torch.Tensor:
    """Reference: log p(ids[j] | ids[:j]) at TEMP from the model's full logits, j = 1..len-1, float64."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double() / TEMP
    return torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def _trees(model, seed: int = 0, n: int = 3, vocab: int = 2000):
    """Synthetic branched trees whose stored (sampler) log-probs are the model's own, perturbed by up to
    ±0.05: ratios near 1, some clipped (clip 0.02 / 0.03 in the tests), rewards all different."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        script = rollout_script(rng, leaves=6, initial=3, tool_turns=2, segment_tokens=12, prompt_tokens=10,
                                vocab=vocab)
        shape = build_tree(TrajectoryTree, script)
        tree = TrajectoryTree(shape.tokens(0))
        for node in range(1, shape.num_nodes):
            path_ids = [int(x) for v in shape.path(node) for x in shape.tokens(v)]
            seg = shape.tokens(node)
            lps = None
            if shape.is_trainable(node):
                true = _path_logprobs(model, path_ids)[-len(seg):]
                lps = (true + 0.05 * torch.from_numpy(rng.uniform(-1, 1, len(seg)))).numpy()
            tree.add(shape.parent(node), seg, shape.is_trainable(node), lps)
        for i, leaf in enumerate(tree.leaves()):
            tree.set_reward(leaf, float(rng.random()) + 0.1 * i)
        out.append(tree)
    return out


# The loss is a weighted sum of fp32 terms w·A·f(r) of both signs: its rounding error scales with Σ|w·A| (≤ 3 for
# mean aggregations of normalised advantages), not with the (often cancelling) total. A few fp32 ulps of that
# scale: 3 × 1.2e-7 × ~3 ≈ 1e-6. (A relative bound on the total alone fails when the two signs nearly cancel.)
LOSS_ATOL = 1e-6


def _adv(trees, estimator="grpo"):
    return get_estimator(estimator)([t.leaf_rewards() for t in trees], eps=1e-6)


def _loss_and_grads(model, trees, update, agg, credit, max_tokens, algo, whole_trees=False, estimator="grpo"):
    policy = PolicyLogprobs(model, temperature=TEMP, backend="torch")
    model.zero_grad()
    total = torch.zeros((), dtype=torch.float64)
    mbs = micro_batches(trees, _adv(trees, estimator), update=update, credit=credit, agg=agg,
                        max_tokens=max_tokens, pad_id=0, whole_trees=whole_trees)
    for mb in mbs:
        mb.old_logprobs = mb.sampler_logprobs
        lp, ent = policy(mb)
        loss, _ = micro_batch_loss(mb, lp, ent, algo)
        loss.backward()
        total += loss.detach().double()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return total, grads, mbs


# grpo (the default) with every credit, aggregation and packed row form; every other registered estimator once,
# the credits alternating (a model forward/backward per case is slow; tests/tree and tests/kernels check
# packed == flat for every estimator x credit x aggregation on random trees)
CASES = [("grpo", c, a, w) for c in ("soft", "hard") for a in AGGS for w in (False, True)]
CASES += [(e, ("soft", "hard")[i % 2], "seq-mean-token-mean", False)
          for i, e in enumerate(e for e in ESTIMATORS if e != "grpo")]


@pytest.mark.parametrize("estimator, credit, agg, whole_trees", CASES)
def test_packed_equals_flat(model, estimator, credit, agg, whole_trees):
    trees = _trees(model)
    algo = AlgoConfig(agg=agg, clip_low=0.02, clip_high=0.03, entropy_coef=0.01)
    loss_f, g_f, mbs_f = _loss_and_grads(model, trees, "flat", agg, credit, 10_000, algo, estimator=estimator)
    loss_p, g_p, mbs_p = _loss_and_grads(model, trees, "packed", agg, credit, 10_000, algo, whole_trees, estimator)
    rows = sum(m.input_ids.shape[0] for m in mbs_p)
    assert rows == len(trees) if whole_trees else rows > len(trees)  # the bounded rows split every tree here
    assert sum(m.tokens for m in mbs_p) < sum(m.tokens for m in mbs_f)  # packing forwards fewer tokens
    assert abs(loss_f.item()) > 1e-4
    torch.testing.assert_close(loss_p, loss_f, rtol=1e-5, atol=LOSS_ATOL)
    assert g_f.keys() == g_p.keys()
    for name in g_f:  # fp32 sums in different orders: relative to the gradient's scale
        scale = g_f[name].abs().max().item()
        torch.testing.assert_close(g_p[name], g_f[name], rtol=0, atol=2e-5 * scale + 1e-9, msg=name)


@pytest.mark.parametrize("update", ["flat", "packed"])
@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_split_changes_nothing(model, update, agg):
    trees = _trees(model, seed=1)
    algo = AlgoConfig(agg=agg, clip_low=0.02, clip_high=0.03)
    loss_1, g_1, mbs_1 = _loss_and_grads(model, trees, update, agg, "soft", 100_000, algo)
    loss_n, g_n, mbs_n = _loss_and_grads(model, trees, update, agg, "soft", 120, algo)
    assert len(mbs_1) == 1 and len(mbs_n) > 2
    torch.testing.assert_close(loss_n, loss_1, rtol=1e-5, atol=LOSS_ATOL)
    for name in g_1:
        scale = g_1[name].abs().max().item()
        torch.testing.assert_close(g_n[name], g_1[name], rtol=0, atol=2e-5 * scale + 1e-9, msg=name)


def test_matches_full_logits_reference(model):
    """Independent reference: one full forward per root-to-leaf path with the model's own logits and
    log_softmax (no fused head, no packing, no micro-batches), then the flat policy_loss of all paths at once."""
    trees = _trees(model, seed=2, n=2)
    agg = "seq-mean-token-mean"
    algo = AlgoConfig(agg=agg, clip_low=0.02, clip_high=0.03)
    lps, olds, advs, seq = [], [], [], []
    for t in trees:
        (adv,) = _adv([t])  # grpo is per prompt: the same as over both trees
        for j, leaf in enumerate(t.leaves()):
            path = t.path(leaf)
            ids = [int(x) for v in path for x in t.tokens(v)]
            sel = torch.tensor([t.is_trainable(v) for v in path for _ in t.tokens(v)][1:])
            lps.append(_path_logprobs(model, ids)[sel])
            olds.append(torch.cat([torch.from_numpy(t.logprobs(v)).double() for v in path if t.is_trainable(v)]))
            advs.append(torch.full((int(sel.sum()),), float(adv[j]), dtype=torch.float64))
            seq.append(torch.full((int(sel.sum()),), len(seq)))
    lp = torch.cat(lps)
    ref, _ = policy_loss(lp, torch.cat(olds), torch.cat(advs), torch.ones_like(lp, dtype=torch.bool), agg=agg,
                         seq_index=torch.cat(seq), clip_low=0.02, clip_high=0.03, backend="torch")
    assert abs(ref.item()) > 1e-4
    for update in ("flat", "packed"):
        got, _, _ = _loss_and_grads(model, trees, update, agg, "soft", 150, algo)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=LOSS_ATOL, msg=update)


def test_tree_mask_is_ancestor_mask():
    t = TrajectoryTree([1, 2])
    a = t.add(0, [3, 4], True)
    t.add(a, [5], True)
    t.add(0, [6], True)
    for leaf in t.leaves():
        t.set_reward(leaf, 1.0)
    from arpo.tree import pack_trees

    pb = pack_trees([t], _adv([t]))
    got = tree_mask(torch.from_numpy(pb.span_end)[None])[0, 0].numpy()
    np.testing.assert_array_equal(got, pb.dense_mask())


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_rows_match_flat_hidden_states(impl):
    """Every token's hidden state in a packed micro-batch (several trees, one padded row each) equals that of
    the same token in the flat batch, for both mask forms."""
    model = load_causal_lm(str(DEMO), attn_implementation=impl)
    trees = _trees(model, seed=3, n=3)
    (pmb,) = micro_batches(trees, _adv(trees), update="packed", credit="soft", agg="token-mean", max_tokens=10_000,
                           pad_id=0, whole_trees=True)
    (fmb,) = micro_batches(trees, _adv(trees), update="flat", credit="soft", agg="token-mean", max_tokens=100_000,
                           pad_id=0)
    policy = PolicyLogprobs(model, backend="torch")
    with torch.no_grad():
        lp_p, _ = policy(pmb)
        lp_f, _ = policy(fmb)
    # token-mean: a packed token's loss_weight = (its copies in the flat batch) / (flat loss tokens), so the
    # copy-weighted sum of packed log-probs must equal the plain sum of the flat ones
    n_flat = lp_f.numel()
    assert n_flat > lp_p.numel()
    copies = pmb.terms.weight.double() * n_flat
    torch.testing.assert_close(copies, copies.round(), atol=1e-4, rtol=0)
    torch.testing.assert_close((lp_p.double() * copies.round()).sum(), lp_f.double().sum(), rtol=1e-6, atol=1e-4)
    # and every distinct value agrees: sorted unique packed values vs flat values matched to the nearest
    nearest = (lp_p.double()[:, None] - lp_f.double()[None, :]).abs().min(1).values
    assert nearest.max() < 1e-4


def test_packed_mask_refuses_flash():
    with pytest.raises(NotImplementedError, match="flash_attention_2"):
        packed_attention_mask(torch.ones(1, 3, dtype=torch.long), "flash_attention_2", torch.float32)


def test_flex_block_mask_matches_dense_mask(monkeypatch):
    """The flex-attention BlockMask path (used on GPUs) gives the dense-mask log-probs. Forward only: torch 2.13
    has no flex-attention backward on CPU. Static shapes: the CPU kernel's dynamic-shape recompile fails to
    build in torch 2.13 (the trainer meets this only on CPU, where it uses dense masks)."""
    monkeypatch.setattr(torch._dynamo.config, "automatic_dynamic_shapes", False)
    dense = load_causal_lm(str(DEMO), attn_implementation="sdpa")
    flex = load_causal_lm(str(DEMO), attn_implementation="flex_attention")
    trees = _trees(dense, seed=3, n=3)
    (mb,) = micro_batches(trees, _adv(trees), update="packed", credit="soft", agg="token-mean", max_tokens=10_000,
                          pad_id=0, whole_trees=PolicyLogprobs(flex).block_sparse)
    assert mb.input_ids.shape[0] == 3  # one row per tree, each with its own ancestor mask
    with torch.no_grad():
        want, _ = PolicyLogprobs(dense)(mb)
        got, _ = PolicyLogprobs(flex)(mb)
    torch.testing.assert_close(got, want, rtol=0, atol=5e-5)  # fp32; different attention kernels


def test_flat_rows_match_the_plain_causal_forward():
    """A flat micro-batch (each path a row under the ancestor mask, rows padded) gives every trainable token the
    log-prob of the model's own causal forward of that path alone, without any mask."""
    model = load_causal_lm(str(DEMO), attn_implementation="sdpa")
    trees = _trees(model, seed=5, n=2)
    (fmb,) = micro_batches(trees, _adv(trees), update="flat", credit="soft", agg="token-mean", max_tokens=100_000,
                           pad_id=0)
    policy = PolicyLogprobs(model, backend="torch")
    with torch.no_grad():
        lp, _ = policy(fmb)
        width = fmb.input_ids.shape[1]
        expected = []
        for b in range(fmb.input_ids.shape[0]):
            rows = (fmb.src // width) == b
            n = int((fmb.span_end[b] == fmb.span_end[b, 0]).sum())  # the path's length (padding after it)
            logits = model(input_ids=fmb.input_ids[b:b + 1, :n]).logits[0].double().log_softmax(-1)
            pos = fmb.src[rows] % width
            expected.append(logits[pos, fmb.targets[rows]])
    torch.testing.assert_close(lp.double(), torch.cat(expected), rtol=0, atol=1e-5)
