"""Random tree specs for the property tests, buildable into either implementation.

A spec is a plain dict in the to_dict() format (prompt, nodes with parent/tokens/trainable/logprobs/reward), so
the same random tree can be built by the C++ and the Python class and compared.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from arpo.algos.advantages import get_estimator

TOKEN = st.integers(min_value=0, max_value=50)
# Few distinct rewards so that ties (zero advantages) and equal groups occur often.
REWARD = st.sampled_from([0.0, 0.0, 1.0, 0.5, -1.0, 2.25])


@st.composite
def tree_specs(draw, max_nodes: int = 12, max_len: int = 5) -> dict:
    prompt = draw(st.lists(TOKEN, min_size=1, max_size=4))
    nodes: list[dict] = []
    for i in range(draw(st.integers(0, max_nodes))):
        parent = draw(st.integers(0, i))
        tokens = draw(st.lists(TOKEN, min_size=0, max_size=max_len))
        trainable = draw(st.booleans())
        with_lp = trainable and draw(st.integers(0, 3)) > 0
        logprobs = [draw(st.floats(-8.0, 0.0, width=32)) for _ in tokens] if with_lp else None
        nodes.append({"parent": parent, "tokens": tokens, "trainable": trainable, "logprobs": logprobs,
                      "reward": None})
    has_child = {n["parent"] for n in nodes}
    for i, n in enumerate(nodes):
        if i + 1 not in has_child:
            n["reward"] = draw(REWARD)
    return {"prompt": prompt, "nodes": nodes}


def forest_specs(max_trees: int = 4, **kw):
    return st.lists(tree_specs(**kw), min_size=1, max_size=max_trees)


def build(cls, spec: dict):
    """Build `spec` with the public add/set_reward calls of `cls` (not from_dict, which is tested separately)."""
    tree = cls(spec["prompt"])
    for n in spec["nodes"]:
        tree.add(n["parent"], n["tokens"], n["trainable"], n["logprobs"])
    for i, n in enumerate(spec["nodes"]):
        if n["reward"] is not None:
            tree.set_reward(i + 1, n["reward"])
    return tree


def leaf_adv(trees, estimator: str = "grpo", eps: float = 1e-6) -> list[np.ndarray]:
    """The leaf advantages of `trees` under a registered estimator (what the trainer passes the batch builders)."""
    return get_estimator(estimator)([t.leaf_rewards() for t in trees], eps=eps)


_BASE, _MOD = 1_000_003, 2_147_483_647


def prefix_hashes(ids) -> np.ndarray:
    """Rolling hash of each prefix of a token sequence: a function of the path up to and including a token,
    so every copy of a shared token gets the same value in a flat batch."""
    h, out = 0, []
    for tok in ids:
        h = (h * _BASE + int(tok) + 1) % _MOD
        out.append(h)
    return np.array(out, dtype=np.int64)


def packed_prefix_hashes(p) -> np.ndarray:
    """The same hashes for a packed batch, following each token's prev_index chain."""
    h = np.zeros(p.num_tokens, dtype=np.int64)
    for q in range(p.num_tokens):
        assert p.prev_index[q] < q, "a token's predecessor must come before it"
        prev = 0 if p.prev_index[q] < 0 else int(h[p.prev_index[q]])
        h[q] = (prev * _BASE + int(p.input_ids[q]) + 1) % _MOD
    return h
