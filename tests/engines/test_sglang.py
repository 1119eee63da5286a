"""SGLang engine: request/response translation against SGLang's documented formats, with a fake ``sglang``
module (SGLang cannot run on the CPU machines). The fixtures under fixtures/ are ``Engine.generate`` outputs
in SGLang's format (meta_info with finish_reason, prompt/completion/cached tokens, output_token_logprobs and
output_top_logprobs as [logprob, token_id, text] triples). ``test_smoke_real_sglang`` runs the real thing
where sglang and a GPU exist (scripts/gpu_check.sh)."""
import importlib.util
import json
import math
import os
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from arpo.engines.base import Request, SamplingParams
from arpo.engines.sglang import (EXTRA_HINT, SGLangEngine, _known_logprobs, _top_arrays, from_response,
                                 kept_mass, to_sampling_params, topk_entropy)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]
V = 512
PROMPT = tuple(range(100, 110))


def load(name):
    return json.loads((FIXTURES / name).read_text())


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class FakeEngine:
    """Records calls like ``sglang.Engine``; answers queued replies, else two tokens per request with a toy
    radix cache (cached = longest prefix shared with a finished sequence, at most len(input) - 1)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls, self.replies, self.seen = [], [], []
        self.tensor_updates, self.disk_updates = [], []
        self.update_reply = (True, "Succeeded to update model weights.")
        self.flushes = 0
        self.shut = False
        FakeEngine.last = self

    def generate(self, **kw):
        self.calls.append(kw)
        if self.replies:
            return self.replies.pop(0)
        return [self._respond(ids, sp) for ids, sp in zip(kw["input_ids"], kw["sampling_params"])]

    def _respond(self, ids, sp):
        cached = min(max((common_prefix(ids, s) for s in self.seen), default=0), len(ids) - 1)
        out = [(len(ids) + j) % V for j in range(min(2, sp["max_new_tokens"]))]
        self.seen.append(ids + out)
        return {"text": "", "output_ids": out, "meta_info": {
            "id": "x", "finish_reason": {"type": "length", "length": len(out)}, "prompt_tokens": len(ids),
            "completion_tokens": len(out), "cached_tokens": cached,
            "output_token_logprobs": [[-0.5, t, None] for t in out],
            "output_top_logprobs": [[[-0.5, t, None], [-1.5, t + 1, None], [-2.0, t + 2, None]]
                                    for t in out]}}

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        self.tensor_updates.append((list(named_tensors), flush_cache))
        return self.update_reply

    def update_weights_from_disk(self, model_path, load_format=None):
        self.disk_updates.append((model_path, sorted(os.listdir(model_path))))
        return self.update_reply + (0,)

    def flush_cache(self):
        self.flushes += 1

    def shutdown(self):
        self.shut = True


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": V}))
    return str(tmp_path)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(sys.modules, "sglang", types.SimpleNamespace(Engine=FakeEngine))
    return FakeEngine


@pytest.fixture
def engine(fake, model_dir):
    eng = SGLangEngine(model_dir, top_logprobs=3)
    yield eng
    eng.shutdown()


def sp(**kw):
    return SamplingParams(**{"max_new_tokens": 8, **kw})


# ---------------------------------------------------------------------------------------------- set-up
def test_missing_extra_names_it(monkeypatch, model_dir):
    monkeypatch.setitem(sys.modules, "sglang", None)  # import sglang -> ImportError
    with pytest.raises(ImportError, match=r"optional extra: pip install 'arpo-engine\[sglang\]'"):
        SGLangEngine(model_dir)
    assert "arpo-engine[sglang]" in EXTRA_HINT


def test_engine_starts_radix_cache_lpm(fake, model_dir):
    eng = SGLangEngine(model_dir, engine_kwargs={"mem_fraction_static": 0.3, "random_seed": 1},
                       tokenizer="/tok")
    assert fake.last.kwargs == {"model_path": model_dir, "tokenizer_path": "/tok", "schedule_policy": "lpm",
                                "disable_radix_cache": False, "mem_fraction_static": 0.3, "random_seed": 1}
    assert eng.vocab_size == V
    eng.shutdown()
    assert fake.last.shut


def test_bad_arguments(fake, model_dir, tmp_path):
    with pytest.raises(ValueError, match="weight_sync"):
        SGLangEngine(model_dir, weight_sync="nccl")
    with pytest.raises(ValueError, match="top_logprobs"):
        SGLangEngine(model_dir, top_logprobs=0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        SGLangEngine(str(tmp_path / "missing"))


def test_vocab_size_of_multimodal_config(fake, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 1000}}))
    assert SGLangEngine(str(tmp_path)).vocab_size == 1000


# ---------------------------------------------------------------------------------------------- requests
def test_to_sampling_params():
    assert to_sampling_params(SamplingParams(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=5,
                                             stop=("</python>", "</answer>"), stop_token_ids=(2,))) == {
        "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_new_tokens": 5,
        "stop": ["</python>", "</answer>"], "stop_token_ids": [2], "no_stop_trim": True,
        "skip_special_tokens": False, "spaces_between_special_tokens": False}
    d = to_sampling_params(SamplingParams(top_k=40, seed=7))
    assert d["top_k"] == 40 and d["sampling_seed"] == 7


def test_one_batched_call_with_histories(engine, fake):
    [root] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    assert fake.last.calls == []  # prefill-only: no call
    results = engine.generate([Request((), sp(), parent=root.handle),
                               Request((5, 6), sp(temperature=0.5, stop=("</python>",)), parent=root.handle),
                               Request((1, 2, 3), sp(max_new_tokens=0)),
                               Request((7, 8), sp(top_k=5))])
    [call] = fake.last.calls
    assert call["input_ids"] == [list(PROMPT), list(PROMPT) + [5, 6], [7, 8]]
    assert call["sampling_params"] == [to_sampling_params(sp()),
                                       to_sampling_params(sp(temperature=0.5, stop=("</python>",))),
                                       to_sampling_params(sp(top_k=5))]
    assert call["return_logprob"] is True and call["top_logprobs_num"] == 3
    assert call["logprob_start_len"] == -1  # output log-probs only: the whole prefix stays cacheable
    handles = [r.handle for r in results] + [root.handle]
    assert len(set(handles)) == 5
    a, b, pre, c = results
    assert engine.tokens(a.handle) == PROMPT + a.tokens and len(a.tokens) == 2
    assert engine.tokens(b.handle) == PROMPT + (5, 6) + b.tokens
    assert engine.tokens(pre.handle) == (1, 2, 3) and pre.tokens == ()
    assert engine.tokens(c.handle) == (7, 8) + c.tokens


def test_prefill_only_result(engine):
    [r] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    assert (r.tokens, r.logprobs, r.entropies, r.finish_reason, r.stop, r.prefilled, r.cached) == \
        ((), (), (), "length", None, 0, 0)
    assert engine.tokens(r.handle) == PROMPT


def test_fork_point_is_the_history_before_the_sample(engine, fake):
    [root] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    cont, pre, plain = engine.generate([Request((5, 6), sp(), root.handle, fork_point=True),
                                        Request((7,), sp(max_new_tokens=0), root.handle, fork_point=True),
                                        Request((8,), sp(), root.handle)])
    assert len(fake.last.calls) == 1 and plain.fork_handle is None
    assert engine.tokens(cont.fork_handle) == PROMPT + (5, 6)
    assert engine.tokens(pre.fork_handle) == PROMPT + (7,)
    assert engine.tokens(cont.handle) == PROMPT + (5, 6) + cont.tokens
    handles = [root.handle, cont.handle, cont.fork_handle, pre.handle, pre.fork_handle, plain.handle]
    assert len(set(handles)) == 6
    engine.release(handles)


def test_cached_and_prefilled_follow_the_radix_cache(engine):
    [root] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    [first] = engine.generate([Request((), sp(), parent=root.handle)])
    assert (first.prefilled, first.cached) == (len(PROMPT), 0)
    forks = engine.generate([Request((), sp(), parent=root.handle), Request((), sp(), parent=root.handle)])
    for r in forks:  # the prompt is in the cache now; SGLang recomputes the last input token
        assert (r.prefilled, r.cached) == (1, len(PROMPT) - 1)
    [child] = engine.generate([Request((42, 43), sp(), parent=first.handle)])
    assert (child.prefilled, child.cached) == (2, len(PROMPT) + 2)


def test_unknown_and_released_handles(engine, fake):
    [r] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    with pytest.raises(KeyError, match="unknown or released"):
        engine.generate([Request((), sp(), parent=r.handle + 1)])
    with pytest.raises(KeyError, match="unknown or released"):
        engine.release([r.handle, 99])
    assert engine.tokens(r.handle) == PROMPT  # nothing released by the failed call
    engine.release([r.handle])
    with pytest.raises(KeyError):
        engine.tokens(r.handle)
    with pytest.raises(KeyError):
        engine.release([r.handle])
    with pytest.raises(ValueError, match="nothing to continue"):
        engine.generate([Request((), sp())])
    assert fake.last.calls == []


# ---------------------------------------------------------------------------------------------- responses
def hand_entropy(known, cap, vocab):
    """The estimate by hand: listed/sampled probabilities, then the tail packed at ``cap``."""
    h = -sum(math.exp(lp) * lp for lp in known)
    r = 1 - sum(math.exp(lp) for lp in known)
    m = min(math.floor(r / cap), vocab - len(known))
    s = r - m * cap
    return h - m * cap * math.log(cap) - (s * math.log(s) if s > 0 else 0.0)


def test_fork_batch_fixture(engine, fake):
    [root] = engine.generate([Request(PROMPT, sp(max_new_tokens=0))])
    fake.last.replies.append(load("fork_batch.json"))
    a, b = engine.generate([Request((5, 6), sp(stop=("</python>",)), parent=root.handle),
                            Request((), sp(stop_token_ids=(2,)), parent=root.handle)])
    assert (a.tokens, a.finish_reason, a.stop) == ((7, 301, 44, 8), "stop", "</python>")
    assert (a.prefilled, a.cached) == (12 - 9, 9)
    assert (b.tokens, b.finish_reason, b.stop, b.prefilled, b.cached) == ((7, 2), "eos", 2, 1, 9)
    assert a.logprobs == pytest.approx((-0.15, -0.693, -2.3, -0.02))  # no top-k/top-p: SGLang's values
    assert engine.tokens(a.handle) == PROMPT + (5, 6, 7, 301, 44, 8)
    # position 2 of a: the sampled token 44 is not in the top-3 list, so it joins the known tokens
    assert a.entropies[2] == pytest.approx(hand_entropy([-0.69, -1.61, -1.8, -2.3], math.exp(-1.8), V),
                                           rel=1e-12)
    assert a.entropies[0] == pytest.approx(hand_entropy([-0.15, -2.6, -3.4], math.exp(-3.4), V), rel=1e-12)
    assert b.entropies[1] == pytest.approx(hand_entropy([-0.01, -5.2, -6.0], math.exp(-6.0), V), rel=1e-12)


@pytest.mark.parametrize("finish, reason, stop", [
    ({"type": "stop", "matched": "</search>"}, "stop", "</search>"),
    ({"type": "stop", "matched": 12}, "eos", 12),
    ({"type": "stop", "matched": [3, 12]}, "eos", 12),
    ({"type": "length", "length": 2}, "length", None),
])
def test_finish_reasons(finish, reason, stop):
    resp = load("length_abort.json")[0]
    resp["meta_info"]["finish_reason"] = finish
    p = from_response(resp, Request((1,), sp()), vocab_size=V)
    assert (p.finish_reason, p.stop, p.tokens) == (reason, stop, (11, 12))


def test_unexpected_finish_reason():
    resp = load("length_abort.json")[0]
    resp["meta_info"]["finish_reason"] = None
    with pytest.raises(ValueError, match="finish_reason"):
        from_response(resp, Request((1,), sp()), vocab_size=V)


def test_abort_raises_and_registers_nothing(engine, fake):
    fake.last.replies.append(load("length_abort.json"))
    with pytest.raises(RuntimeError, match="maximum allowed length"):
        engine.generate([Request(PROMPT, sp()), Request((9,) * 40000, sp())])
    assert engine._seqs == {}


def test_response_without_logprobs_is_an_error():
    resp = load("length_abort.json")[0]
    del resp["meta_info"]["output_token_logprobs"]
    with pytest.raises(KeyError, match="output_token_logprobs"):
        from_response(resp, Request((1,), sp()), vocab_size=V)


# ---------------------------------------------------------------------------------------------- estimates
def test_entropy_hand_values():
    # listed 0.5, 0.2, 0.1 (V=10): the tail 0.2 packs into two tokens at 0.1 -> entropy of [.5 .2 .1 .1 .1]
    known = np.log([[0.5, 0.2, 0.1]])
    [h] = topk_entropy(known, np.array([0.1]), 10)
    assert h == pytest.approx(-(0.5 * math.log(0.5) + 0.2 * math.log(0.2) + 0.3 * math.log(0.1)), rel=1e-12)
    assert h == pytest.approx(1.359237, abs=1e-6)
    # tail 0.25 under a cap 0.1: 0.1, 0.1, 0.05
    [h] = topk_entropy(np.log([[0.5, 0.25]]), np.array([0.1]), 10)
    assert h == pytest.approx(-sum(p * math.log(p) for p in (0.5, 0.25, 0.1, 0.1, 0.05)), rel=1e-12)
    # everything listed: exact; nothing listed beyond a certain token: 0
    [h] = topk_entropy(np.log([[0.6, 0.4]]), np.array([0.4]), 2)
    assert h == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)), rel=1e-12)
    [h] = topk_entropy(np.array([[0.0]]), np.array([1.0]), 100)
    assert h == 0.0


def test_entropy_is_a_lower_bound_tighter_than_one_bucket():
    rng = np.random.default_rng(0)
    vocab, k = 64, 5
    for _ in range(200):
        p = rng.dirichlet(np.full(vocab, rng.choice([0.05, 0.3, 2.0])))
        true = -(p * np.log(np.clip(p, 1e-300, None))).sum()
        top = np.sort(p)[::-1][:k]
        [est] = topk_entropy(np.log(top)[None], top[-1:], vocab)
        r = max(1 - top.sum(), 0.0)
        one_bucket = -(top * np.log(top)).sum() - (r * math.log(r) if r > 0 else 0.0)
        assert one_bucket - 1e-9 <= est <= true + 1e-9


def test_entropy_with_missing_top_list():
    top_lp, top_ids = _top_arrays([None, [[-0.1, 3, None], [-2.5, 4, None]]], 2)
    known, cap = _known_logprobs(top_lp, top_ids, np.array([-0.7, -2.5]), np.array([5, 4]))
    assert cap.tolist() == pytest.approx([1.0, math.exp(-2.5)])
    h = topk_entropy(known, cap, V)
    q = math.exp(-0.7)  # only the sampled token known: the rest is one bucket of 1 - q
    assert h[0] == pytest.approx(0.7 * q - (1 - q) * math.log(1 - q), rel=1e-12)
    assert np.isfinite(h[1]) and h[1] > 0


def test_kept_mass_top_k_top_p():
    top = np.log([[0.5, 0.2, 0.1]])
    assert kept_mass(top, sp()) == pytest.approx([1.0])
    assert kept_mass(top, sp(top_k=2)) == pytest.approx([0.7])  # the cut is inside the list: exact
    assert kept_mass(top, sp(top_p=0.6)) == pytest.approx([0.7])  # 0.5 < 0.6, then 0.7 >= 0.6
    assert kept_mass(top, sp(top_p=0.5)) == pytest.approx([0.5])
    assert kept_mass(top, sp(top_k=1, top_p=0.9)) == pytest.approx([0.5])  # joint: the smaller set
    assert kept_mass(top, sp(top_p=0.95)) == pytest.approx([0.95])  # closes beyond the list: ~top_p
    assert kept_mass(top, sp(top_k=10)) == pytest.approx([1.0])  # beyond the list: no correction
    assert kept_mass(np.zeros((1, 0)), sp(top_p=0.8)) == pytest.approx([0.8])  # nothing listed


def test_logprobs_renormalised_over_kept_set():
    resp = load("length_abort.json")[0]
    p = from_response(resp, Request((1,), sp(top_k=3)), vocab_size=V)
    top0 = math.exp(-0.9) + math.exp(-1.2) + math.exp(-1.4)
    top1 = math.exp(-0.4) + math.exp(-1.6) + math.exp(-2.2)
    assert p.logprobs == pytest.approx((-1.2 - math.log(top0), -0.4 - math.log(top1)), rel=1e-12)
    assert all(lp < 0 for lp in p.logprobs)


# ---------------------------------------------------------------------------------------------- weights
def test_weight_sync_tensor_chunks_then_flush(engine, fake):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    engine.tensor_chunk_bytes = 36  # 0.weight (48 B) alone, then 0.bias + 1.weight (36 B), then 1.bias
    engine.update_weights(types.SimpleNamespace(module=model))  # DeepSpeed/DDP wrapper unwrapped
    ups = fake.last.tensor_updates
    assert [[n for n, _ in chunk] for chunk, _ in ups] == [["0.weight"], ["0.bias", "1.weight"], ["1.bias"]]
    assert all(flush is False for _, flush in ups) and fake.last.flushes == 1
    sent = dict(kv for chunk, _ in ups for kv in chunk)
    for name, t in model.state_dict().items():
        assert torch.equal(sent[name], t) and not sent[name].requires_grad


def test_weight_sync_disk(fake, model_dir):
    class Model:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, d):
            Path(d, "config.json").write_text("{}")
            Path(d, self.name).write_text("w")

    eng = SGLangEngine(model_dir, weight_sync="disk")
    eng.update_weights(Model("model-a.safetensors"))
    eng.update_weights(Model("model-b.safetensors"))
    (d1, files1), (d2, files2) = fake.last.disk_updates
    assert d1 == d2 and files1 == ["config.json", "model-a.safetensors"]
    assert files2 == ["config.json", "model-b.safetensors"]  # the previous save is gone
    assert fake.last.flushes == 2
    eng.shutdown()
    assert not os.path.exists(d1)


def test_weight_sync_failure_raises(engine, fake):
    torch = pytest.importorskip("torch")
    fake.last.update_reply = (False, "Failed to update weights: parameter 'x' not found")
    with pytest.raises(RuntimeError, match="update_weights_from_tensor failed: .*not found"):
        engine.update_weights(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------- real SGLang
def _real_sglang() -> bool:
    return importlib.util.find_spec("sglang") is not None and shutil.which("nvidia-smi") is not None


@pytest.mark.skipif(not _real_sglang(), reason="needs sglang (optional extra) and a CUDA GPU")
def test_smoke_real_sglang():
    """The demo agent in SGLang: a fork point, forks served from the radix cache, formats as documented,
    tokens/s, and a weight sync that flushes the cache."""
    demo = ROOT / "assets" / "demo-agent"
    if not (demo / "config.json").exists():
        pytest.skip("assets/demo-agent is not built")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo)
    prompt = tuple(tok.encode("Question: what is 17 * 23 + 4? Answer with the python tool. " * 3))
    eng = SGLangEngine(str(demo), engine_kwargs={"mem_fraction_static": 0.3, "random_seed": 0})
    try:
        params = SamplingParams(max_new_tokens=32, stop=("</python>",))
        [root] = eng.generate([Request(prompt, SamplingParams(max_new_tokens=0))])
        eng.generate([Request((), params, parent=root.handle)])  # puts the prompt in the radix cache
        forks = eng.generate([Request((), params, parent=root.handle)] * 2)
        assert all(r.cached > 0 and r.prefilled + r.cached == len(prompt) for r in forks), forks
        for r in forks:
            assert r.tokens and len(r.logprobs) == len(r.entropies) == len(r.tokens)
            assert max(r.logprobs) <= 1e-6 and 0 <= min(r.entropies)
            assert max(r.entropies) <= math.log(eng.vocab_size) + 1e-6
        raw = eng._engine.generate(input_ids=[list(prompt)], sampling_params=[to_sampling_params(params)],
                                   return_logprob=True, top_logprobs_num=eng.top_logprobs)[0]
        assert [t[1] for t in raw["meta_info"]["output_token_logprobs"]] == raw.get("output_ids", [
            t[1] for t in raw["meta_info"]["output_token_logprobs"]])  # no_stop_trim keeps the stop token
        batch = [Request((), SamplingParams(max_new_tokens=64), parent=root.handle)] * 32
        t0 = time.perf_counter()
        out = eng.generate(batch)
        dt = time.perf_counter() - t0
        cached, total = sum(r.cached for r in out), sum(r.cached + r.prefilled for r in out)
        print(f"sglang smoke: {sum(len(r.tokens) for r in out) / dt:.0f} tokens/s (32 forks x 64 tokens), "
              f"cached {cached} of {total} prompt tokens")
        eng.update_weights(AutoModelForCausalLM.from_pretrained(demo))
        [again] = eng.generate([Request((), params, parent=root.handle)])
        assert again.cached == 0  # flushed: the old KV is stale
    finally:
        eng.shutdown()
