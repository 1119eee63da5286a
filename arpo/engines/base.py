"""The generation-engine protocol: token ids in, token ids + log-probs + entropies out, with forkable sequences.

A *sequence* is a token history the engine keeps (with its KV cache where it has one), named by an integer
handle. ``generate`` takes a batch of requests; each appends ``tokens`` to its parent sequence (or starts a
new one from ``tokens`` when ``parent`` is None), samples up to ``max_new_tokens`` and returns the handle of
the resulting sequence. Several requests with the same parent fork it: each child continues from the
parent's state without recomputing the shared prefix. ``max_new_tokens=0`` only prefills (a prompt), which
gives a fork point; a request with ``fork_point=True`` also returns the sequence that ends right after its
``tokens`` (before what it sampled) as a fork point, so a tool result and the continuation after it take one
call. ``release`` frees sequences no longer needed.

Per generated token the result carries its log-probability under the sampling distribution (temperature,
top-k/top-p applied) and the full-vocabulary entropy of the temperature-scaled distribution (engines that
only see top-k log-probs return a top-k estimate and say so). ``prefilled`` counts tokens the engine had to
compute before sampling, ``cached`` the prefix tokens it served from cache; an engine without sharing
prefills the whole history every time.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

FINISH_REASONS = ("stop", "eos", "length")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. ``stop`` strings end generation when the decoded new text contains one
    (detected at token level, even when a stop string spans several tokens); ``stop_token_ids`` end it at a
    token (EOS). The stop string or token is included in the output."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"SamplingParams.temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 0:
            raise ValueError(f"SamplingParams: top_k and max_new_tokens must be >= 0, got {self.top_k}, "
                             f"{self.max_new_tokens}")


@dataclasses.dataclass(frozen=True)
class Request:
    """Append ``tokens`` to sequence ``parent`` (a new sequence when None), then sample per ``params``;
    ``fork_point``: also keep the sequence after ``tokens`` (``Result.fork_handle``)."""

    tokens: tuple[int, ...]
    params: SamplingParams
    parent: int | None = None
    fork_point: bool = False


@dataclasses.dataclass(frozen=True)
class Result:
    """One request's outcome. ``tokens``/``logprobs``/``entropies`` are the generated tokens only ([n] each).

    finish_reason: "stop" (a stop string matched; ``stop`` says which), "eos" (a stop token id; ``stop`` is
                   its id) or "length" (max_new_tokens reached; also for max_new_tokens=0)
    prefilled:     tokens computed before sampling (the appended tokens, plus any history not in cache)
    cached:        history tokens served from cache
    fork_handle:   with ``Request.fork_point``, the sequence of the parent's tokens + the request's tokens (a
                   handle to release like ``handle``); None otherwise
    """

    handle: int
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    entropies: tuple[float, ...]
    finish_reason: str
    stop: str | int | None
    prefilled: int
    cached: int
    fork_handle: int | None = None


class Engine(Protocol):
    """What samplers need from a generation backend (``hf.HFEngine``, ``sglang.SGLangEngine``)."""

    vocab_size: int

    def generate(self, requests: list[Request]) -> list[Result]: ...

    def release(self, handles: list[int]) -> None: ...

    def tokens(self, handle: int) -> tuple[int, ...]: ...

    def update_weights(self, model) -> None: ...
