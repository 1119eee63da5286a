"""The tool loop and the ARPO / GRPO samplers: branched rollouts of a batch of prompts, one tree per prompt.

Every path runs the same loop: generate until a tool call closes (``</python>``, or ``</tool_call>`` with
``tools.format: json``; the ToolBox's ``call_format`` gives the stop strings, the parser and the result tokens),
``</answer>``, EOS or the length limit (a call past ``max_tool_calls`` ends the path as ``tool_limit``); a tool
call is submitted to the ``ToolBox`` at once (it runs while other paths generate), its result is prefilled as
context (loss mask 0) and the path continues. All live paths of all prompts share each engine call, so prompts,
forks and continuations are batched together.

ARPO (DESIGN.md, "The algorithm"): each prompt is prefilled once and starts N paths. ``H_init`` of a path is
the mean normalised entropy (entropy / ln V) of its first k generated tokens; after each tool result, ``H_t``
is that of the first k tokens the path generates next (fewer when that segment is shorter than k), and
``P_t = α + β·(H_t − H_init)``. Rule ``threshold`` branches when ``P_t > τ``; rule ``stochastic`` with
probability ``clip(P_t, 0, 1)``. A branch forks ``Z`` new paths at the tool-result boundary (the engine
sequence that ends with the result, so the prefix is never recomputed; the result and the continuation after it
go in one request, which returns the boundary as its fork point), each sampling its own continuation,
while the budget of M paths per prompt lasts. When every path of a prompt has ended with fewer than M paths
started, fresh paths from the prompt fill the budget: each prompt ends with exactly M leaves, each a distinct
sampled path. GRPO = M initial paths and no branching, through the same code.

Randomness is keyed by path identity, not by the order of events: each path's sampling seed (and its draw for
the ``stochastic`` rule) derives from the sampler's seed, the path's key ((prompt, start index), plus
(segment, child) per fork) and its segment number. Tool calls finish in whatever order the pool returns them,
which changes how requests are batched but not what any path samples, so a seed reproduces a rollout.

Two tool-call counts: a leaf's ``tool_calls`` are the calls on its root-to-leaf path, so a call made before a
fork is counted once per leaf below it; ``Rollout.tool_executions`` counts the calls the sampler submitted to
the ``ToolBox`` for the prompt (kind "tool": each run once, whatever number of leaves share it; "invalid"
actions run nothing and are not counted). ``last_metrics``: ``tool_calls_on_path_per_traj`` (mean of
``tool_calls`` over leaves), ``tool_executions_per_traj`` (executed calls / leaves) and
``tool_executions_per_prompt`` (executed calls / prompts). GRPO never forks, so there the two agree. Where the
time goes: ``engine_seconds`` / ``engine_calls`` (inside ``engine.generate``), ``engine_rows_per_call`` (requests
per call: how full the batches the engine decodes start), ``tool_call_seconds_mean`` / ``_max`` (wall time of
each call a tool ran, from its ``ToolResult.elapsed_s``).

The branch decision needs only a segment's first k tokens; it is taken when the segment ends, and the
children fork at the boundary before it, which is the same as deciding after k tokens.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait

import numpy as np

from ..config import RolloutConfig
from ..engines.base import Engine, Request, Result, SamplingParams
from ..tools.toolbox import ToolBox
from ..tree import TrajectoryTree


@dataclasses.dataclass
class _Path:
    prompt: int  # index of its prompt in the batch
    node: int  # tree node of its last segment
    handle: int  # engine sequence ending where the path ends
    response: list[int]  # tokens after the prompt (generated and tool results)
    calls: int = 0
    h_init: float | None = None
    boundary: tuple[int, int] | None = None  # (engine handle, tree node) after the last tool result
    finish: str | None = None
    key: tuple[int, ...] = ()  # identity: (prompt, start index) [+ (segment, child) per fork]; seeds its sampling
    segment: int = 0  # generation requests made so far
    result: list[int] = dataclasses.field(default_factory=list)  # tool result tokens its next request appends


@dataclasses.dataclass
class Leaf:
    """One finished trajectory: its leaf node, response text, why it ended (answer | eos | length |
    tool_limit: a call past rollout.max_tool_calls | stop: a stop string without a complete action) and how
    many tool calls are on its path (a call made before a fork counts for every leaf below the fork)."""

    node: int
    text: str
    finish: str
    tool_calls: int


@dataclasses.dataclass
class Rollout:
    """The rollouts of one prompt: a tree with exactly M leaves and the leaves' details, ordered by path identity
    (deterministic for a seed, unlike the order in which paths finish), and the number of tool calls executed
    for the prompt (each once, however many leaves share it: at most the leaves' ``tool_calls`` summed)."""

    tree: TrajectoryTree
    leaves: list[Leaf]
    tool_executions: int


@dataclasses.dataclass
class _Stats:
    branches: int = 0
    fills: int = 0
    h_init: list[float] = dataclasses.field(default_factory=list)
    h_t: list[float] = dataclasses.field(default_factory=list)
    generated: int = 0
    prefilled: int = 0
    cached: int = 0
    history: int = 0  # tokens already in the sequences the requests continue (what sharing can serve)
    engine_seconds: float = 0.0  # wall time inside engine.generate (the rest: tools, bookkeeping)
    engine_calls: int = 0
    engine_rows: int = 0  # requests over all engine calls
    tool_seconds: list[float] = dataclasses.field(default_factory=list)  # wall time of each call a tool ran
    tool_executions: list[int] = dataclasses.field(default_factory=list)  # per prompt: "tool" calls submitted

    def metrics(self, rollouts: list[Rollout], seconds: float) -> dict[str, float]:
        def mean(x):
            return float(np.mean(x)) if len(x) else float("nan")

        leaves = [leaf for r in rollouts for leaf in r.leaves]
        executed = sum(self.tool_executions)
        return {
            "tool_calls_on_path_per_traj": mean([leaf.tool_calls for leaf in leaves]),
            "tool_executions_per_traj": executed / len(leaves) if leaves else float("nan"),
            "tool_executions_per_prompt": executed / len(rollouts) if rollouts else float("nan"),
            "branches": float(self.branches),
            "fills": float(self.fills),
            "h_init_mean": mean(self.h_init),
            "h_t_mean": mean(self.h_t),
            "delta_h_mean": mean(self.h_t) - mean(self.h_init) if self.h_t else float("nan"),
            "prefix_reuse": self.cached / max(self.cached + self.prefilled, 1),
            "shared_prefix_cached": self.cached / max(self.history, 1),
            "generated_tokens": float(self.generated),
            "gen_tokens_per_s": self.generated / max(seconds, 1e-9),
            "seconds": seconds,
            "engine_seconds": self.engine_seconds,
            "engine_calls": float(self.engine_calls),
            "engine_rows_per_call": self.engine_rows / max(self.engine_calls, 1),
            "tool_call_seconds_mean": mean(self.tool_seconds),
            "tool_call_seconds_max": max(self.tool_seconds, default=float("nan")),
        }


@dataclasses.dataclass
class _Batch:
    """The state of one ``rollout`` call."""

    trees: list
    roots: list[int]
    started: list[int]  # paths started per prompt (the budget M caps it)
    leaves: list[list[_Path]]
    pending: dict[Future, _Path] = dataclasses.field(default_factory=dict)
    handles: list[int] = dataclasses.field(default_factory=list)  # every engine sequence made, released at the end
    stats: _Stats = dataclasses.field(default_factory=_Stats)
    progress: Callable[[int], None] | None = None


class Sampler:
    """ARPO (cfg.mode == "arpo") or GRPO rollouts of token-id prompts through ``engine`` and ``tools``."""

    def __init__(self, engine: Engine, tools: ToolBox, tokenizer, cfg: RolloutConfig, *, seed: int = 0,
                 answer_tag: str = "answer", deterministic: bool = False):
        self.engine, self.tools, self.tokenizer, self.cfg = engine, tools, tokenizer, cfg
        self.answer_tag = answer_tag
        self.format = tools.call_format(tokenizer, answer_tag)  # tools.format: stop strings, parser, result tokens
        self.seed = seed
        self.deterministic = deterministic
        self._ln_v = math.log(engine.vocab_size)
        eos = tokenizer.eos_token_id
        self._stop_ids = (eos,) if eos is not None else ()
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ public
    def rollout(self, prompts: list[list[int]], progress: Callable[[int], None] | None = None) -> list[Rollout]:
        """Exactly ``cfg.M`` leaves per prompt; ``last_metrics`` describes the batch. ``progress(1)`` is called
        each time a trajectory ends (e.g. a tqdm bar's ``update``)."""
        start = time.perf_counter()
        initial = self.cfg.N if self.cfg.mode == "arpo" else self.cfg.M
        b = _Batch([TrajectoryTree(p) for p in prompts], [], [initial] * len(prompts), [[] for _ in prompts],
                   stats=_Stats(tool_executions=[0] * len(prompts)), progress=progress)
        b.roots = [r.handle for r in self._generate(b, [Request(tuple(p), self._params(0)) for p in prompts])]
        queue = [_Path(i, 0, b.roots[i], [], key=(i, j)) for i in range(len(prompts)) for j in range(initial)]
        try:
            while queue or b.pending:
                queue = self._step(b, queue + self._harvest(b, block=not queue))
                if not queue and not b.pending:
                    queue = self._fill(b)
        finally:  # also when the engine or a tree raises: no sequence (and its KV) outlives the call
            wait(list(b.pending))
            self.engine.release(b.handles)
        rollouts = [Rollout(t, [Leaf(p.node, self.tokenizer.decode(p.response), p.finish, p.calls)
                                for p in sorted(ls, key=lambda p: p.key)],  # not finish order: that is timing
                            executed)
                    for t, ls, executed in zip(b.trees, b.leaves, b.stats.tool_executions)]
        self.last_metrics = b.stats.metrics(rollouts, time.perf_counter() - start)
        return rollouts

    # ------------------------------------------------------------------------------------------ the loop
    def _step(self, b: _Batch, queue: list[_Path]) -> list[_Path]:
        """One engine call: every queued path appends its tool result, if it has one, and generates. A result
        that a branch could still fork at (ARPO, budget left) comes back as a fork point."""
        if not queue:
            return []
        reqs = [Request(tuple(p.result), self._params(self._remaining(p), p), parent=p.handle,
                        fork_point=bool(p.result) and self._may_branch(b, p)) for p in queue]
        nxt = []
        for p, res in zip(queue, self._generate(b, reqs)):
            if p.result:  # the tree holds it already (``_harvest``)
                p.boundary, p.result = (res.fork_handle, p.node), []
            nxt += self._after_generation(b, p, res)
        return nxt

    def _after_generation(self, b: _Batch, p: _Path, res: Result) -> list[_Path]:
        """Record a generated segment; branch by the entropy rule; submit its tool call or end the path."""
        p.node = b.trees[p.prompt].add(p.node, list(res.tokens), True, list(res.logprobs))
        p.handle = res.handle
        p.response += res.tokens
        b.stats.generated += len(res.tokens)
        forks = self._entropy_rule(b, p, res)
        action = self.format.parse(self.tokenizer.decode(res.tokens))
        if action.kind == "tool" and p.calls >= self.cfg.max_tool_calls:
            self._end(b, p, "tool_limit")
        elif action.kind in ("tool", "invalid"):
            if self._remaining(p) > 0:
                b.pending[self.tools.submit(action, p.calls)] = p
                p.calls += action.kind == "tool"
                b.stats.tool_executions[p.prompt] += action.kind == "tool"
            else:
                self._end(b, p, "length")
        else:
            self._end(b, p, "answer" if action.kind == "answer" else res.finish_reason)
        return forks

    def _entropy_rule(self, b: _Batch, p: _Path, res: Result) -> list[_Path]:
        """H_init from a path's first segment; after a tool result, H_t and maybe Z forks at the boundary."""
        h = float(np.mean(np.asarray(res.entropies[: self.cfg.k], dtype=np.float64))) / self._ln_v
        if p.h_init is None:
            p.h_init = h
            b.stats.h_init.append(h)
            return []
        if p.boundary is None:
            return []
        handle, node = p.boundary
        p.boundary = None
        b.stats.h_t.append(h)
        if not self._may_branch(b, p) or not self._branch(h - p.h_init, p):
            return []  # (budget spent now was spent when the request went out: a fork never lacks its handle)
        z = min(self.cfg.Z, self.cfg.M - b.started[p.prompt])
        b.started[p.prompt] += z
        b.stats.branches += 1
        before = p.response[: len(p.response) - len(res.tokens)]
        return [_Path(p.prompt, node, handle, list(before), p.calls, p.h_init, key=p.key + (p.segment, c))
                for c in range(z)]

    def _may_branch(self, b: _Batch, p: _Path) -> bool:
        return self.cfg.mode == "arpo" and b.started[p.prompt] < self.cfg.M

    def _branch(self, delta_h: float, p: _Path) -> bool:
        prob = self.cfg.alpha + self.cfg.beta * delta_h
        if self.cfg.rule == "threshold":
            return prob > self.cfg.tau
        draw = np.random.default_rng(self._seed_of(p, purpose=1)).random()
        return bool(draw < min(max(prob, 0.0), 1.0))

    def _harvest(self, b: _Batch, block: bool) -> list[_Path]:
        """Finished tool calls → result tokens appended to the tree, and to the path's next request; blocks only
        when nothing else can run, then waits up to ``rollout.batch_wait_ms`` for the other pending calls, so that
        their continuations join the same engine call.

        ``deterministic``: waits for every pending call, so which paths share an engine call (and so the
        padding around each row, which moves logits by float rounding) never depends on how fast a tool ran;
        results are taken in path order either way (``wait`` returns a set)."""
        if not b.pending:
            return []
        if self.deterministic:
            done, _ = wait(list(b.pending))
        else:
            if block:
                wait(list(b.pending), return_when=FIRST_COMPLETED)
            done, _ = wait(list(b.pending), timeout=self.cfg.batch_wait_ms / 1e3)
        out = []
        for fut in sorted(done, key=lambda f: (b.pending[f].key, b.pending[f].segment)):
            p = b.pending.pop(fut)
            result = fut.result()
            if result.elapsed_s > 0.0:  # a call a tool ran (a rejected one is answered at once, elapsed 0)
                b.stats.tool_seconds.append(result.elapsed_s)
            ids = self.format.encode_result(result.text)
            if len(ids) >= self._remaining(p):  # no room left to answer after it
                self._end(b, p, "length")
                continue
            p.node = b.trees[p.prompt].add(p.node, ids, False)
            p.response += ids
            p.result = ids
            out.append(p)
        return out

    def _fill(self, b: _Batch) -> list[_Path]:
        """Fresh paths from the prompt for every prompt whose paths all ended before its budget was spent."""
        fresh = []
        for i, n in enumerate(b.started):
            fresh += [_Path(i, 0, b.roots[i], [], key=(i, j)) for j in range(n, self.cfg.M)]
            b.stats.fills += self.cfg.M - n
            b.started[i] = self.cfg.M
        return fresh

    # ------------------------------------------------------------------------------------------ helpers
    def _seed_of(self, p: _Path, purpose: int = 0) -> int:
        """A seed from the sampler's seed, the path's identity and its segment: the same whatever order the tool
        results come back in (batching never changes what a path samples)."""
        return int(np.random.SeedSequence([self.seed, purpose, p.segment, *p.key]).generate_state(2, np.uint64)[0] >> 2)

    def _params(self, max_new: int, p: _Path | None = None) -> SamplingParams:
        """Sampling parameters; a prefill (``p`` None) samples nothing and needs no seed."""
        c = self.cfg
        return SamplingParams(temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, max_new_tokens=max_new,
                              stop=self.format.stop_strings,
                              stop_token_ids=self._stop_ids, seed=None if p is None else self._next_seed(p))

    def _next_seed(self, p: _Path) -> int:
        seed = self._seed_of(p)
        p.segment += 1
        return seed

    def _generate(self, b: _Batch, reqs: list[Request]) -> list[Result]:
        b.stats.history += sum(len(self.engine.tokens(r.parent)) for r in reqs if r.parent is not None)
        start = time.perf_counter()
        results = self.engine.generate(reqs)
        b.stats.engine_seconds += time.perf_counter() - start
        b.stats.engine_calls += 1
        b.stats.engine_rows += len(reqs)
        b.handles += [r.handle for r in results] + [r.fork_handle for r in results if r.fork_handle is not None]
        b.stats.prefilled += sum(r.prefilled for r in results)
        b.stats.cached += sum(r.cached for r in results)
        return results

    def _remaining(self, p: _Path) -> int:
        return self.cfg.max_response_tokens - len(p.response)

    def _end(self, b: _Batch, p: _Path, finish: str) -> None:
        p.finish = finish
        b.leaves[p.prompt].append(p)
        if b.progress is not None:
            b.progress(1)
