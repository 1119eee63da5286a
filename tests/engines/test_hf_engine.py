"""HFEngine: forked/continued KV gives the logits of a full recomputation; stops, budget, counts, seeds."""
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arpo.engines.base import Request, SamplingParams
from arpo.engines.hf import HFEngine

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"


@pytest.fixture(scope="module")
def demo():
    tok = AutoTokenizer.from_pretrained(DEMO, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True, dtype=torch.float32).eval()
    return model, tok


def _prompt(tok, text="What is 12 * 34 - 5?"):
    return tuple(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False))


def _reference(model, history: tuple[int, ...], token: int, temperature: float = 1.0):
    """log p(token | history) and the entropy, from one full forward of the history."""
    with torch.no_grad():
        ids = torch.tensor([history], device=model.device)
        logits = model(ids).logits[0, -1].double() / temperature
    logp = torch.log_softmax(logits, -1)
    return float(logp[token]), float(-(logp.exp() * logp).sum())


def _params(n, seed=None, **kw):
    return SamplingParams(max_new_tokens=n, seed=seed, **kw)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (run by scripts/gpu_check.sh)"))])
def test_fork_and_continuation_match_full_recomputation(demo, device):
    model, tok = demo
    model = model.to(device)
    eng = HFEngine(model, tok)
    root = eng.generate([Request(_prompt(tok), _params(0))])[0]
    kids = eng.generate([Request((), _params(6, seed=s), parent=root.handle) for s in (1, 2, 3)])
    result = tuple(tok.encode("\n<result>\n408\n</result>\n", add_special_tokens=False))
    # rows of different history lengths continue in one batch (pads inside the sequence)
    more = eng.generate([Request(result, _params(5, seed=9), parent=k.handle) for k in kids[:2]]
                        + [Request(result[:3], _params(5, seed=8), parent=kids[2].handle)])
    for res in kids + more:
        history = eng.tokens(res.handle)
        start = len(history) - len(res.tokens)
        for j, (t, lp, h) in enumerate(zip(res.tokens, res.logprobs, res.entropies)):
            ref_lp, ref_h = _reference(model, history[: start + j], t)
            assert lp == pytest.approx(ref_lp, abs=2e-5) and h == pytest.approx(ref_h, abs=2e-5)
    model.to("cpu")


def test_shared_and_unshared_engines_agree(demo):
    model, tok = demo
    outs = []
    for share in (True, False):
        eng = HFEngine(model, tok, share_prefix=share)
        root = eng.generate([Request(_prompt(tok), _params(0))])[0]
        kids = eng.generate([Request((), _params(8, seed=s), parent=root.handle) for s in range(4)])
        outs.append([(k.tokens, k.prefilled, k.cached) for k in kids])
    assert [o[0] for o in outs[0]] == [o[0] for o in outs[1]]
    n = len(_prompt(tok))
    assert all(o[1:] == (1, n - 1) for o in outs[0])  # shared: only the prompt's last token is fed
    assert all(o[1:] == (n, 0) for o in outs[1])  # unshared: the whole prompt every time


def test_counts_for_prefill_and_tool_result(demo):
    model, tok = demo
    eng = HFEngine(model, tok)
    prompt = _prompt(tok)
    root = eng.generate([Request(prompt, _params(0))])[0]
    assert (root.tokens, root.prefilled, root.cached, root.finish_reason) == ((), len(prompt) - 1, 0, "length")
    kid = eng.generate([Request((), _params(4, seed=0), parent=root.handle)])[0]
    cont = eng.generate([Request((7, 8, 9), _params(2, seed=0), parent=kid.handle)])[0]
    # fed: the child's last sampled token + the 3 appended ones; cached: everything before
    assert (cont.prefilled, cont.cached) == (4, len(prompt) + 3)
    assert eng.tokens(cont.handle) == prompt + kid.tokens + (7, 8, 9) + cont.tokens


def test_fork_point_keeps_the_sequence_before_the_sample(demo):
    """A tool result + continuation in one request with fork_point gives the same fork point (tokens, KV) as a
    prefill-only request: the branches from either sample the same tokens with the same log-probs."""
    model, tok = demo
    result = tuple(tok.encode("\n<result>\n408\n</result>\n", add_special_tokens=False))
    runs = []
    for fork_point in (True, False):
        eng = HFEngine(model, tok)
        root = eng.generate([Request(_prompt(tok), _params(0))])[0]
        kid = eng.generate([Request((), _params(4, seed=0), parent=root.handle)])[0]
        cont, pre = eng.generate([Request(result, _params(n, seed=1), parent=kid.handle, fork_point=fork_point)
                                  for n in (3, 0)])
        fork = cont.fork_handle if fork_point else pre.handle
        more = eng.generate([Request((), _params(5, seed=s), parent=fork) for s in (2, 3)])
        more += eng.generate([Request((), _params(5, seed=4), parent=cont.handle)])
        assert eng.tokens(fork) == eng.tokens(kid.handle) + result
        assert all((m.prefilled, m.cached) == (1, len(eng.tokens(fork)) - 1) for m in more[:2])  # none redone
        runs.append((eng, [cont] + more))
        assert (kid.fork_handle, cont.fork_handle is None, pre.fork_handle is None) == (None, not fork_point,
                                                                                        not fork_point)
    (eng, split), (_, plain) = runs
    for a, b in zip(split, plain):
        assert a.tokens == b.tokens and a.logprobs == pytest.approx(b.logprobs, abs=2e-5)
    for res in split:  # and both are a full recomputation's, to fp32 rounding over a long history
        history = eng.tokens(res.handle)
        start = len(history) - len(res.tokens)
        for j, (t, lp, h) in enumerate(zip(res.tokens, res.logprobs, res.entropies)):
            ref_lp, ref_h = _reference(model, history[: start + j], t)
            assert lp == pytest.approx(ref_lp, abs=5e-5) and h == pytest.approx(ref_h, abs=5e-5)


def test_appended_tokens_of_different_lengths_are_prefilled_apart(demo, monkeypatch):
    """A 2-token extension is not padded to a 300-token one (padding at most doubles prefill work); every row
    then samples in one batch, and each gets what it gets alone."""
    model, tok = demo
    long, short = tuple(range(100, 400)), (7, 8)
    outs = []
    for together in (True, False):
        eng = HFEngine(model, tok)
        root = eng.generate([Request(_prompt(tok), _params(0))])[0]
        shapes, forward = [], eng._forward
        monkeypatch.setattr(eng, "_forward",
                            lambda ids, *a, _f=forward: shapes.append(tuple(ids.shape)) or _f(ids, *a))
        reqs = [Request(t, _params(3, seed=i), parent=root.handle) for i, t in enumerate((long, short, ()))]
        outs.append(eng.generate(reqs) if together else [eng.generate([r])[0] for r in reqs])
        if together:  # extensions: the parent's last token + all appended tokens but the last
            assert sorted(s for s in shapes if s[1] > 1) == [(1, 2), (1, 300)] and shapes[2] == (3, 1)
    for a, b in zip(*outs):
        assert a.tokens == b.tokens and a.logprobs == pytest.approx(b.logprobs, abs=2e-5)
        assert (a.prefilled, a.cached) == (b.prefilled, b.cached)
    n = len(_prompt(tok)) - 1  # the parent's cache
    assert [(r.prefilled, r.cached) for r in outs[0]] == [(301, n), (3, n), (1, n)]


def test_budget_splits_batches_without_changing_results(demo, monkeypatch):
    model, tok = demo
    outs, calls = [], []
    for budget in (1 << 20, 64):
        eng = HFEngine(model, tok, token_budget=budget)
        forward = eng._forward
        monkeypatch.setattr(eng, "_forward", lambda *a, _f=forward: calls.append(budget) or _f(*a))
        reqs = [Request(_prompt(tok, f"What is {i} + {i}?"), _params(3, seed=i)) for i in range(4)]
        outs.append([r.tokens for r in eng.generate(reqs)])
    assert outs[0] == outs[1]
    assert calls.count(64) > calls.count(1 << 20)  # the small budget ran more, smaller batches


def test_seeded_sampling_is_reproducible_and_greedy_with_top_k_1(demo):
    model, tok = demo
    a = HFEngine(model, tok).generate([Request(_prompt(tok), _params(10, seed=5))])[0]
    b = HFEngine(model, tok).generate([Request(_prompt(tok), _params(10, seed=5))])[0]
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    g = HFEngine(model, tok).generate([Request(_prompt(tok), _params(10, seed=1, top_k=1))])[0]
    eng = HFEngine(model, tok)
    history = _prompt(tok)
    for t, lp in zip(g.tokens, g.logprobs):
        with torch.no_grad():
            assert t == int(model(torch.tensor([history])).logits[0, -1].argmax())
        assert lp == pytest.approx(0.0, abs=1e-6)  # certain under the top-1 distribution
        history += (t,)
    assert eng.vocab_size == model.config.vocab_size


def test_stop_strings_spanning_tokens_and_stop_ids(demo):
    model, tok = demo
    eng = HFEngine(model, tok)
    pieces = tok.encode("x = 1</pyth", add_special_tokens=False) + tok.encode("on>", add_special_tokens=False)
    from arpo.engines.hf import _Row

    row = _Row(Request((1,), _params(50, stop=("</python>",))), (1,), None, 0, [1], torch.Generator())
    for t in pieces:
        row.out.append(t)
        stopped = eng._check_stop(row)
    assert stopped and row.finish == ("stop", "</python>")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    row = _Row(Request((1,), _params(50, stop_token_ids=(eos,))), (1,), None, 0, [1], torch.Generator())
    row.out.append(eos)
    assert eng._check_stop(row) and row.finish == ("eos", eos)


def test_generation_stops_at_a_tool_tag(demo):
    from arpo.envs.datasets import build_prompt
    from arpo.envs.tasks import load_task

    model, tok = demo  # the demo agent answers an arith question with a python call first
    prompt = tuple(build_prompt(tok, load_task("arith", "test")[1], ("python", "search")))
    res = HFEngine(model, tok).generate(
        [Request(prompt, _params(60, seed=0, top_k=1, stop=("</python>", "</search>", "</answer>")))])[0]
    text = tok.decode(res.tokens)
    assert (res.finish_reason, res.stop) == ("stop", "</python>")
    assert text.startswith("<python>") and text.endswith("</python>") and text.count("</python>") == 1


def test_update_weights_drops_the_cache(demo):
    model, tok = demo
    eng = HFEngine(model, tok)
    root = eng.generate([Request(_prompt(tok), _params(0))])[0]
    eng.update_weights(model)
    kid = eng.generate([Request((), _params(1, seed=0), parent=root.handle)])[0]
    assert (kid.cached, kid.prefilled) == (0, len(_prompt(tok)))


def test_bad_use(demo):
    model, tok = demo
    eng = HFEngine(model, tok)
    with pytest.raises(KeyError, match="unknown or released sequence handle 99"):
        eng.generate([Request((1,), _params(1), parent=99)])
    with pytest.raises(ValueError, match="no tokens and no parent"):
        eng.generate([Request((), _params(1))])
    root = eng.generate([Request((1, 2), _params(0))])[0]
    eng.release([root.handle])
    with pytest.raises(KeyError, match="released"):
        eng.tokens(root.handle)
    with pytest.raises(ValueError, match="token_budget"):
        HFEngine(model, tok, token_budget=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0.0)


def test_prompts_of_different_lengths_batch_like_alone(demo):
    model, tok = demo
    prompts = [_prompt(tok, "Hi"), _prompt(tok, "In which city was the founder of Taigo Books born? " * 3)]
    together = HFEngine(model, tok).generate([Request(p, _params(6, seed=i)) for i, p in enumerate(prompts)])
    for i, p in enumerate(prompts):
        alone = HFEngine(model, tok).generate([Request(p, _params(6, seed=i))])[0]
        assert alone.tokens == together[i].tokens
        assert alone.logprobs == pytest.approx(together[i].logprobs, abs=2e-5)
        assert all(math.isfinite(x) for x in together[i].logprobs + together[i].entropies)


def test_sliding_window_models_are_refused(demo):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = demo
    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, use_sliding_window=True, sliding_window=6,
                      layer_types=["sliding_attention"] * 2)
    with pytest.raises(ValueError, match="sliding-window attention"):
        HFEngine(Qwen2ForCausalLM(cfg), tok)
