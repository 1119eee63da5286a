"""SGLang engine: the generation protocol (base.py) on top of ``sglang.Engine``, for GPU servers.

SGLang is an optional extra (``pip install 'arpo-engine[sglang]'``) and is imported only when an engine is
built. The protocol maps onto SGLang's offline Engine API (``srt/entrypoints/engine.py``: ``generate``,
``update_weights_from_tensor``, ``update_weights_from_disk``, ``flush_cache``) as follows.

- Sequences. SGLang keeps no per-sequence state for us: this engine keeps each handle's token history, and a
  request sends its whole history (parent history + appended tokens) as ``input_ids``. The radix cache (on;
  ``schedule_policy="lpm"`` serves the longest cached prefix first) finds the shared prefix by itself, so a
  fork re-uses its parent's KV without naming it. ``release`` only forgets histories; the radix cache evicts
  unused prefixes (LRU) on its own.
- One ``generate`` = one batched ``Engine.generate`` call for all requests with ``max_new_tokens >= 1``.
  Requests with ``max_new_tokens == 0`` (fork points) are answered here without a call, since SGLang versions
  disagree on a zero-token generation (some sample one token, sgl-project/sglang#4892): they report
  ``prefilled=0, cached=0``, and the prefix enters the radix cache with the first real generation from it,
  whose ``prefilled`` counts it. A ``fork_point`` request's fork handle is just its history (parent + tokens),
  whose KV the radix cache holds once the request ran.
- Accounting: ``prefilled = meta_info["prompt_tokens"] - meta_info["cached_tokens"]``, ``cached =
  meta_info["cached_tokens"]`` (SGLang always recomputes at least the last prompt token).
- Log-probs. SGLang reports ``log softmax(logits / T)``: temperature applied, top-k/top-p *not* (standard path
  of ``srt/layers/sampler.py``; leave ``SGLANG_RETURN_ORIGINAL_LOGPROB`` unset, it switches to pre-temperature
  values). SGLang samples from the *joint* top-k ∩ top-p set of that distribution (``filter_apply_order=
  "joint"``), so ``Result.logprobs`` subtract the log of the kept mass, computed from the returned top-k list.
  This is exact when the cut falls inside the list (``top_k <= top_logprobs``, or the top-p prefix closes
  inside it); otherwise the kept mass is estimated as ``max(listed mass, top_p)`` (error below
  ``log(1 + p_k/top_p)`` for top-p; for a top-k cut beyond the list, raise ``top_logprobs``). A batch whose
  requests all have ``top_k=1`` takes SGLang's greedy path, whose log-probs ignore the temperature.
- Entropies are a *top-k estimate* (SGLang returns only the top ``top_logprobs`` log-probs of the
  temperature-scaled distribution, plus the sampled token's): see ``topk_entropy``. It is a lower bound of
  the full-vocabulary entropy, exact when the listed tokens hold all the mass.
- Finish reasons: SGLang ``{"type": "stop", "matched": int}`` → "eos" (stop = the id), ``matched: str`` →
  "stop" (stop = the string), ``{"type": "length"}`` → "length", ``{"type": "abort", "message": ...}`` →
  ``RuntimeError``. Stop strings and ids stay in the output (``no_stop_trim``; tokens are read from
  ``output_token_logprobs``, which SGLang never trims), special tokens are kept in the text that stop
  strings are matched on (``skip_special_tokens=False``: tool tags may be special tokens). SGLang also stops
  at the model's own EOS ids (tokenizer / generation config) even when they are not in ``stop_token_ids``;
  that is reported as "eos" too.
- Seeds go to ``sampling_seed`` (recent SGLang; reproducible only under ``enable_deterministic_inference``).
- Weights: ``update_weights`` pushes the model's weights (``arpo.models.merged_weights``: a LoRA model's
  merged) in chunks through ``update_weights_from_tensor``
  (``weight_sync="tensor"``: same machine, CPU or CUDA tensors) or saves the model and calls
  ``update_weights_from_disk`` (``"disk"``); then the radix cache is flushed, its KV being stale.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Sequence

import numpy as np

from ..models import has_lora, merged_state_dict, merged_weights
from .base import Request, Result, SamplingParams

EXTRA_HINT = "the sglang engine needs the optional extra: pip install 'arpo-engine[sglang]'"
WEIGHT_SYNC_MODES = ("tensor", "disk")


def _import_sglang():
    try:
        import sglang
    except ImportError as e:
        raise ImportError(f"{EXTRA_HINT} ({e})") from e
    return sglang


# ---------------------------------------------------------------------------------------------- translation
def to_sampling_params(params: SamplingParams) -> dict[str, Any]:
    """SGLang's sampling-params dict for one request (keys of ``srt/sampling/sampling_params.py``)."""
    out = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,  # SGLang: -1 = whole vocabulary
        "max_new_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "stop_token_ids": list(params.stop_token_ids),
        "no_stop_trim": True,  # the protocol keeps the stop string / token in the output
        "skip_special_tokens": False,  # tool tags may be special tokens: keep them in the matched text
        "spaces_between_special_tokens": False,
    }
    if params.seed is not None:
        out["sampling_seed"] = params.seed
    return out


def from_response(resp: dict, request: Request, *, vocab_size: int) -> Result:
    """Translate one element of ``Engine.generate``'s output (``{"text", "meta_info": {...}, ...}``) into a
    ``Result`` whose handle (-1) the engine replaces."""
    meta = resp["meta_info"]
    finish = meta.get("finish_reason")
    if isinstance(finish, dict) and finish.get("type") == "abort":
        raise RuntimeError(f"SGLang aborted the request: {finish.get('message', finish)}")
    out = meta.get("output_token_logprobs")
    if out is None:
        raise KeyError("SGLang response without meta_info['output_token_logprobs'] (return_logprob=True?)")
    tokens = tuple(int(t[1]) for t in out)
    sampled = np.array([float(t[0]) for t in out], dtype=np.float64)  # [n]
    top = (meta.get("output_top_logprobs") or [None] * len(out))[:len(out)]
    top_lp, top_ids = _top_arrays(top, len(out))  # [n, w] each, sorted by descending log-prob
    entropies = topk_entropy(*_known_logprobs(top_lp, top_ids, sampled, np.array(tokens)), vocab_size)
    logprobs = sampled - np.log(kept_mass(top_lp, request.params))
    reason, stop = _finish(finish, tokens)
    cached = int(meta.get("cached_tokens", 0))
    return Result(-1, tokens, tuple(logprobs.tolist()), tuple(entropies.tolist()), reason, stop,
                  int(meta["prompt_tokens"]) - cached, cached)


def _finish(finish: Any, tokens: tuple[int, ...]) -> tuple[str, str | int | None]:
    kind = finish.get("type") if isinstance(finish, dict) else None
    if kind == "length":
        return "length", None
    if kind == "stop":
        matched = finish.get("matched")
        if isinstance(matched, str):
            return "stop", matched
        if isinstance(matched, (list, tuple)) and tokens and tokens[-1] in matched:
            matched = tokens[-1]
        if isinstance(matched, int) and not isinstance(matched, bool):
            return "eos", int(matched)
    raise ValueError(f"unexpected SGLang finish_reason {finish!r}")


def _top_arrays(top: Sequence[Sequence | None], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k lists ``[(logprob, token_id, text), ...]`` per position (None = none) → log-probs and ids
    [n, w], each row sorted by descending log-prob, padded with -inf / -1."""
    width = max((len(row) for row in top if row), default=0)
    lp = np.full((n, width), -np.inf)
    ids = np.full((n, width), -1, dtype=np.int64)
    for i, row in enumerate(top):
        if row:
            lp[i, :len(row)] = [float(t[0]) for t in row]
            ids[i, :len(row)] = [int(t[1]) for t in row]
    order = np.argsort(-lp, axis=1, kind="stable")
    return np.take_along_axis(lp, order, 1), np.take_along_axis(ids, order, 1)


def _known_logprobs(top_lp, top_ids, sampled_lp, sampled_ids):
    """The listed log-probs plus the sampled token's when it is not listed ([n, w+1]), and the bound on any
    unlisted token's probability ([n]: the smallest listed one; 1 where nothing is listed)."""
    listed = (top_ids == sampled_ids[:, None]).any(1)
    known = np.concatenate([top_lp, np.where(listed, -np.inf, sampled_lp)[:, None]], axis=1)
    smallest = np.where(np.isfinite(top_lp), top_lp, np.inf).min(1, initial=np.inf)
    has_list = np.isfinite(smallest)
    cap = np.where(has_list, np.exp(np.where(has_list, smallest, 0.0)), 1.0)
    return known, cap


def topk_entropy(known_lp: np.ndarray, cap: np.ndarray, vocab_size: int) -> np.ndarray:
    """Entropy estimate [n] (nats) from the known log-probs of each position ([n, m], -inf = none).

    The unlisted mass ``r = 1 - sum(p_known)`` is spread over the remaining ``V - m`` tokens as concentrated
    as the bound allows (no unlisted token is more likely than ``cap``, the smallest listed probability):
    ``floor(r / cap)`` tokens at ``cap`` and the rest on one token. That is the least entropic tail
    consistent with what SGLang returns, so the estimate is a lower bound of the true entropy (a tighter
    one than renormalising the top-k, which drops the tail, or one bucket of mass r), and exact when the
    listed tokens hold all the mass. When the bound cannot hold the tail (rounding), it is spread evenly.
    """
    finite = np.isfinite(known_lp)
    p = np.where(finite, np.exp(np.where(finite, known_lp, 0.0)), 0.0)
    head = -(p * np.where(finite, known_lp, 0.0)).sum(1)
    r = np.clip(1.0 - p.sum(1), 0.0, 1.0)
    n_tail = np.maximum(vocab_size - finite.sum(1), 0).astype(np.float64)
    cap = np.clip(cap, 1e-300, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = np.minimum(np.floor(r / cap), n_tail)
        s = np.clip(r - m * cap, 0.0, None)
        packed = -m * cap * np.log(cap) - np.where(s > 0, s * np.log(np.where(s > 0, s, 1.0)), 0.0)
        even = -r * np.log(r / n_tail)
    tail = np.where(m >= n_tail, even, packed)
    return head + np.where((r > 1e-6) & (n_tail > 0), tail, 0.0)


def kept_mass(top_lp: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Probability mass [n] of the joint top-k ∩ top-p set SGLang samples from, from the top-k log-probs
    ([n, w], rows sorted descending, -inf = none). 1 without filtering."""
    n, w = top_lp.shape
    if params.top_k == 0 and params.top_p >= 1.0:
        return np.ones(n)
    if w == 0:  # nothing listed: the kept mass is at least top_p
        return np.full(n, params.top_p)
    p = np.exp(top_lp)
    before = np.concatenate([np.zeros((n, 1)), np.cumsum(p, axis=1)[:, :-1]], axis=1)  # mass listed before
    keep = np.isfinite(top_lp)
    inside = np.zeros(n, dtype=bool)
    if params.top_p < 1.0:
        keep &= before < params.top_p
        inside |= (before >= params.top_p).any(1)  # the top-p prefix closes inside the list
    if params.top_k > 0:
        keep &= np.arange(w) < params.top_k
        inside |= np.isfinite(top_lp).sum(1) >= params.top_k  # the top-k cut is in the list
    estimate = np.clip(np.maximum(p.sum(1), min(params.top_p, 1.0)), None, 1.0)
    return np.where(inside, (p * keep).sum(1), estimate)


def read_vocab_size(model_path: str) -> int:
    """The LM-head width from ``model_path/config.json`` (``vocab_size``, or ``text_config.vocab_size``)."""
    path = os.path.join(model_path, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"SGLangEngine needs a local model directory with config.json: {path}") from e
    vocab = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not vocab:
        raise ValueError(f"{path} has no vocab_size")
    return int(vocab)


def _check(result: Any, what: str) -> None:
    """Raise when an SGLang control call reports failure ((success, message, ...) tuple or .success)."""
    if isinstance(result, tuple) and result and isinstance(result[0], bool):
        ok, message = result[0], result[1] if len(result) > 1 else ""
    else:
        ok, message = getattr(result, "success", True), getattr(result, "message", "")
    if not ok:
        raise RuntimeError(f"SGLang {what} failed: {message}")


# ---------------------------------------------------------------------------------------------- engine
class SGLangEngine:
    """The generation protocol over ``sglang.Engine`` (radix cache on, longest-prefix-match scheduling).

    model_path:    local Hugging Face model directory (also the tokenizer unless ``tokenizer`` names one)
    top_logprobs:  k of the top-k log-probs requested per token (entropy estimate, top-k/top-p log-probs)
    weight_sync:   "tensor" (update_weights_from_tensor, chunked) or "disk" (save_pretrained + reload)
    engine_kwargs: more ``sglang.Engine`` (ServerArgs) keywords: mem_fraction_static, random_seed, tp_size...
    """

    tensor_chunk_bytes = 512 << 20  # bytes of weights per update_weights_from_tensor call

    def __init__(self, model_path: str, *, top_logprobs: int = 20, weight_sync: str = "tensor",
                 engine_kwargs: dict | None = None, tokenizer: str | None = None):
        if weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(f"SGLangEngine: weight_sync must be one of {WEIGHT_SYNC_MODES}, "
                             f"got {weight_sync!r}")
        if top_logprobs < 1:
            raise ValueError(f"SGLangEngine: top_logprobs must be >= 1, got {top_logprobs}")
        sglang = _import_sglang()
        self.vocab_size = read_vocab_size(model_path)
        self.top_logprobs = top_logprobs
        self.weight_sync = weight_sync
        kwargs = {"model_path": model_path, "tokenizer_path": tokenizer or model_path,
                  "schedule_policy": "lpm", "disable_radix_cache": False, **(engine_kwargs or {})}
        self._engine = sglang.Engine(**kwargs)
        self._seqs: dict[int, tuple[int, ...]] = {}
        self._next_handle = 0
        self._weights_dir: str | None = None

    # ------------------------------------------------------------------------------------------ protocol
    def tokens(self, handle: int) -> tuple[int, ...]:
        try:
            return self._seqs[handle]
        except KeyError:
            raise KeyError(f"SGLangEngine: unknown or released sequence handle {handle}") from None

    def release(self, handles: list[int]) -> None:
        unknown = [h for h in handles if h not in self._seqs]
        if unknown:
            raise KeyError(f"SGLangEngine: unknown or released sequence handles {unknown}")
        for h in handles:
            del self._seqs[h]

    def generate(self, requests: list[Request]) -> list[Result]:
        histories = [self._history(i, r) for i, r in enumerate(requests)]
        live = [i for i, r in enumerate(requests) if r.params.max_new_tokens > 0]
        parsed: dict[int, Result] = {}
        if live:
            outs = self._engine.generate(
                input_ids=[list(histories[i]) for i in live],
                sampling_params=[to_sampling_params(requests[i].params) for i in live],
                return_logprob=True, top_logprobs_num=self.top_logprobs, logprob_start_len=-1)
            outs = [outs] if isinstance(outs, dict) else list(outs)
            if len(outs) != len(live):
                raise RuntimeError(f"SGLang returned {len(outs)} outputs for {len(live)} requests")
            parsed = {i: from_response(o, requests[i], vocab_size=self.vocab_size)
                      for i, o in zip(live, outs)}
        return [self._result(histories[i], parsed.get(i), requests[i].fork_point) for i in range(len(requests))]

    def update_weights(self, model) -> None:
        """Serve ``model``'s weights from now on (HF parameter names); the radix cache is flushed."""
        model = getattr(model, "module", model)  # DDP / DeepSpeed wrappers
        if self.weight_sync == "tensor":  # a LoRA model's weights go merged, under the plain model's names
            for chunk in _chunks(merged_weights(model), self.tensor_chunk_bytes):
                _check(self._engine.update_weights_from_tensor(named_tensors=chunk, flush_cache=False),
                       "update_weights_from_tensor")
        else:
            _check(self._engine.update_weights_from_disk(model_path=self._save(model)),
                   "update_weights_from_disk")
        _check(self._engine.flush_cache(), "flush_cache")

    def shutdown(self) -> None:
        self._engine.shutdown()
        self._seqs.clear()
        if self._weights_dir is not None:
            shutil.rmtree(self._weights_dir, ignore_errors=True)
            self._weights_dir = None

    # ------------------------------------------------------------------------------------------ helpers
    def _history(self, index: int, req: Request) -> tuple[int, ...]:
        history = (self.tokens(req.parent) if req.parent is not None else ()) + tuple(req.tokens)
        if not history:
            raise ValueError(f"request {index}: no tokens and no parent: nothing to continue from")
        return history

    def _result(self, history: tuple[int, ...], p: Result | None, fork_point: bool) -> Result:
        fork = self._new_handle(history) if fork_point else None  # a history: the radix cache holds its KV
        if p is None:  # prefill-only: nothing computed yet (see the module docstring)
            return Result(self._new_handle(history), (), (), (), "length", None, 0, 0, fork)
        return dataclasses.replace(p, handle=self._new_handle(history + p.tokens), fork_handle=fork)

    def _new_handle(self, tokens: tuple[int, ...]) -> int:
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self._seqs[handle] = tokens
        return handle

    def _save(self, model) -> str:
        if self._weights_dir is None:
            self._weights_dir = tempfile.mkdtemp(prefix="arpo-sglang-weights-")
        else:  # drop the previous save (a different shard count would leave stale files)
            shutil.rmtree(self._weights_dir)
            os.makedirs(self._weights_dir)
        if has_lora(model):  # the plain model with the adapters merged
            model.save_pretrained(self._weights_dir, state_dict=merged_state_dict(model))
        else:
            model.save_pretrained(self._weights_dir)
        return self._weights_dir


def _chunks(weights, max_bytes: int):
    """``[(name, tensor), ...]`` lists of about ``max_bytes`` each from ``(name, tensor)`` pairs, in order."""
    chunk, size = [], 0
    for name, t in weights:
        chunk.append((name, t.detach()))
        size += t.numel() * t.element_size()
        if size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
