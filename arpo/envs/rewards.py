"""Outcome rewards: a response's final answer scored against an example's accepted answers, in [0, 1].

Every reward function has the signature ``fn(response, ground_truth) -> float``; ``ground_truth`` holds one or
more accepted answers and the score is the best over them. The answer is the content of the last complete
``<answer>...</answer>`` outside tool results (see ``extract_answer``); a response without one scores 0
(``format`` excepted, which scores the tags themselves).

- ``exact_match``: 1 if the SQuAD-normalised answer equals a normalised accepted answer.
- ``f1``: SQuAD token F1 between normalised answer and accepted answer.
  Both first reduce an answer holding ``\\boxed{...}`` to the last box's content, since ARPO's own system
  prompts ask for ``<answer>The final answer is \\[ \\boxed{...} \\]</answer>`` on QA data too.
- ``math``: symbolic/numeric equivalence by ``math-verify``. Both sides are read as LaTeX math: a text
  without ``$``, ``\\(``, ``\\[`` or ``\\boxed`` is wrapped in ``$...$`` first (math-verify's LaTeX extractor
  ignores bare LaTeX such as ``\\sqrt{2}``, and its plain-expression one reads ``2^{1/2}`` as 2), so
  ``17`` = ``17.0`` = ``\\boxed{17}``, ``\\frac12`` = ``0.5`` = ``1/2``, ``\\sqrt{2}`` = ``2^{1/2}``,
  ``x=3`` = ``3``, ``50\\%`` = ``0.5``; floats are compared to 6 decimals (``0.3333`` != ``1/3``).
- ``format``: 1 if the response is well formed (see ``format_reward``).
- ``random``: the control reward: 1 with probability ``p``, independent of the answer's correctness. The draw
  is a hash of (seed, ground truth, response), so it is reproducible (a resumed run scores the same
  responses the same) and two different responses are independent draws.

Time and memory limits: sympy can run for ever (``9^{9^{9}}`` against ``1`` does), and math-verify's own limit
uses ``signal.alarm``, which raises in any thread but the main one. So parsing and comparison run in a pool of
``MATH_WORKERS`` worker processes, each a fresh ``python -m arpo.envs._math_worker`` (``subprocess``, not
``multiprocessing``: a worker never imports the parent's ``__main__``, so a script's top-level imports and
code cost it nothing) with its address space capped at ``MATH_MEMORY_BYTES`` before it imports sympy. A call
gets ``timeout_s`` (default ``MATH_TIMEOUT_S``) of wall-clock time from any thread, for waiting for a free
worker and for the comparison together; past it the call scores 0 with a warning, and a worker still busy is
killed and replaced in the background. A worker found dead is replaced and the comparison retried once
within the same budget. The one wait outside the budget is the pool's start (~0.4 s a worker, ~2 s for four
on two cores; each may take up to ``_WORKER_START_S`` on a cold disk): ``warm_up()``, which a trainer calls
once, or else the first call (again if every replacement has failed to start). Measured cost once warm:
~0.1 ms of IPC per call; 0.4-0.7 ms per call for integers and for fractions vs decimals, 5-10 ms for
polynomials that need ``simplify``. Workers are killed when the parent exits.

``get_reward_fn`` resolves a ``data.reward`` name, including ``auto`` (per data_source) and custom
``'package.module:function'`` rewards, whose return values are checked. ``score_rollouts`` scores the leaves
of rollouts with it: the one scoring path of training and evaluation.
"""
from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import inspect
import json
import logging
import math
import numbers
import os
import queue
import re
import select
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import arpo
from arpo.config import REWARD_FNS, import_callable
from arpo.envs.prompts import KNOWN_TOOLS

__all__ = [
    "MATH_MEMORY_BYTES",
    "MATH_TIMEOUT_S",
    "RewardError",
    "auto_reward_name",
    "exact_match_reward",
    "extract_answer",
    "f1_reward",
    "format_reward",
    "get_reward_fn",
    "math_reward",
    "normalize_answer",
    "random_reward",
    "strip_results",
    "warm_up",
]

logger = logging.getLogger(__name__)

MATH_TIMEOUT_S = 5.0
MATH_WORKERS = 4
MATH_MEMORY_BYTES = 1 << 30  # address-space cap (RLIMIT_AS) of a math-verify worker
_WORKER_START_S = 120.0  # a worker imports sympy; a cold disk can take a while

RewardFn = Callable[[str, Sequence[str]], float]


class RewardError(ValueError):
    """An unknown or unusable reward function (the message names it)."""


# ----------------------------------------------------------------------------------------------------------
# Answers and text normalisation.


def extract_answer(response: str, tag: str = "answer") -> str | None:
    """The stripped content of the last complete ``<tag>...</tag>`` in ``response`` outside tool results, or
    None if there is none.

    Tool results are not the model's words (a retrieved document may hold ``<answer>Paris</answer>``), so
    ``strip_results`` removes them first. A complete pair is an opening tag and the first closing tag after
    it, with no other opening tag in between: with nested or stray opening tags the innermost pair wins
    (``<answer>a <answer>b</answer>`` gives ``b``), a stray closing tag is ignored, and an unclosed
    ``<answer>`` after a complete one does not hide it. The last pair is taken because agents revise: a final
    answer supersedes one written (or quoted) before it.
    """
    match = _last_pair(strip_results(response), tag)
    return None if match is None else match.group(1).strip()


def strip_results(response: str) -> str:
    """``response`` without its tool results: every ``<result>...</result>`` block is removed, and an unclosed
    ``<result>`` with all the text after it; the same for ``<tool_response>...</tool_response>`` blocks (the
    tool role of Qwen2.5-style chat templates, where ``tools.format: json`` puts results).

    The engine appends each result as ``\\n<result>\\n...\\n</result>\\n`` (or inside the template's frame)
    with the frame's tags inside the tool's text escaped (``arpo.tools.parser.format_result``,
    ``arpo.tools.formats.JsonFormat``), so a block's first closing tag is its end.
    """
    return _RESULT_BLOCK.sub("", response)


_RESULT_BLOCK = re.compile(r"<(result|tool_response)>.*?(?:</\1>|\Z)", re.DOTALL)


def _last_pair(response: str, tag: str) -> re.Match | None:
    last = None
    for last in _pair_pattern(tag).finditer(response):
        pass
    return last


@functools.lru_cache(maxsize=8)
def _pair_pattern(tag: str) -> re.Pattern:
    open_tag, close_tag = re.escape(f"<{tag}>"), re.escape(f"</{tag}>")
    return re.compile(rf"{open_tag}((?:(?!{open_tag}).)*?){close_tag}", re.DOTALL)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, drop ASCII punctuation and the articles a/an/the, collapse spaces."""
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCTUATION)).split())


def _unboxed(text: str) -> str:
    """The content of the last ``\\boxed{...}`` in ``text``, or ``text`` if it has no (balanced) box."""
    box = text.rfind("\\boxed{")
    if box == -1:
        return text
    start, depth = box + len("\\boxed{"), 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            return text[start:i]
    return text


def _answers(ground_truth: Sequence[str] | str) -> tuple[str, ...]:
    """Accepted answers; a bare string is one answer (not a sequence of characters)."""
    return (ground_truth,) if isinstance(ground_truth, str) else tuple(ground_truth)


# ----------------------------------------------------------------------------------------------------------
# Text rewards.


def exact_match_reward(response: str, ground_truth: Sequence[str], *, answer_tag: str = "answer") -> float:
    """1.0 if the normalised answer equals any normalised accepted answer, else 0.0."""
    pred = extract_answer(response, answer_tag)
    if pred is None:
        return 0.0
    pred = normalize_answer(_unboxed(pred))
    return float(any(pred == normalize_answer(g) for g in _answers(ground_truth)))


def _token_f1(pred: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # SQuAD v2: two empty answers agree, one empty one does not
        return float(pred_tokens == gold_tokens)
    same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_reward(response: str, ground_truth: Sequence[str], *, answer_tag: str = "answer") -> float:
    """Best SQuAD token F1 (multiset overlap of normalised tokens) of the answer against an accepted one."""
    pred = extract_answer(response, answer_tag)
    if pred is None:
        return 0.0
    return max((_token_f1(_unboxed(pred), g) for g in _answers(ground_truth)), default=0.0)


def format_reward(response: str, ground_truth: Sequence[str] = (), *, answer_tag: str = "answer") -> float:
    """1.0 if the response ends its work with an answer, else 0.0 (``ground_truth`` is ignored).

    Precisely, in the response without its tool results (``strip_results``): ``extract_answer`` finds a
    complete ``<answer>...</answer>``, and the text after that answer's ``</answer>`` holds no unclosed tool
    call, i.e. no ``<python>``, ``<search>`` or ``<tool_call>`` (``tools.format: json``) without a matching
    closing tag after it (a call the model started after answering and never finished, as a truncated response
    has).
    """
    own = strip_results(response)
    answer = _last_pair(own, answer_tag)
    return float(answer is not None and _UNCLOSED_TOOL.search(own, answer.end()) is None)


_UNCLOSED_TOOL = re.compile(rf"<({'|'.join((*KNOWN_TOOLS, 'tool_call'))})>(?![\s\S]*</\1>)")


# ----------------------------------------------------------------------------------------------------------
# Math: math-verify in worker processes with a wall-clock limit.


class _Worker:
    """One worker process (``python -m arpo.envs._math_worker``) and the parent's ends of its pipes; the
    constructor waits up to ``_WORKER_START_S`` until it is ready (a wait of its own, unrelated to any call's
    budget)."""

    def __init__(self, memory_bytes: int) -> None:
        if not sys.executable:
            raise RuntimeError("math-verify worker did not start: sys.executable is unknown")
        self.proc = subprocess.Popen(
            [sys.executable, *_SAFE_PATH, "-m", "arpo.envs._math_worker", str(memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env(),
        )
        self._out = self.proc.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._out, select.POLLIN)
        self._buffer = bytearray()
        _LIVE_WORKERS.add(self)
        try:
            ready = self._receive(time.monotonic() + _WORKER_START_S) == "ready"
        except TimeoutError:
            self._fail(f"not ready within {_WORKER_START_S:.0f} s")
        except (EOFError, OSError, ValueError):
            ready = False
        if not ready:
            try:
                self.proc.wait(timeout=10)  # it is exiting; wait to say how
            except subprocess.TimeoutExpired:
                pass
            self._fail(f"exited with code {self.proc.returncode}")

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def _fail(self, why: str) -> None:
        self.kill()
        raise RuntimeError(f"math-verify worker did not start: {why}")

    def run(self, golds: tuple[str, ...], pred: str, timeout_s: float) -> tuple[bool, bool]:
        """``(match, retire)``; TimeoutError past ``timeout_s``, EOFError or OSError if the worker is dead."""
        deadline = time.monotonic() + timeout_s
        self.proc.stdin.write(json.dumps({"golds": list(golds), "pred": pred}).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._receive(deadline)
        return bool(reply["match"]), bool(reply["retire"])

    def _receive(self, deadline: float):
        """The next message, decoded; TimeoutError past ``deadline``, EOFError if the worker has exited."""
        while (end := self._buffer.find(b"\n")) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(math.ceil(left * 1000)):
                raise TimeoutError
            chunk = os.read(self._out, 1 << 16)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return json.loads(line)

    def kill(self) -> None:
        _LIVE_WORKERS.discard(self)
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:  # a write buffer that cannot be flushed to a dead worker
                pass


# Python 3.11+: the worker's sys.path does not start with the current directory (a stray sympy.py there).
_SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()
_LIVE_WORKERS: set[_Worker] = set()  # every worker process not yet killed, for _kill_all at exit


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the directory that holds the ``arpo`` package first on PYTHONPATH (so
    that the worker imports this ``arpo`` however the parent found it)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(arpo.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


@atexit.register
def _kill_all() -> None:
    """Kill the workers when the parent exits (one may be stuck in sympy, where end of input goes unseen)."""
    for worker in list(_LIVE_WORKERS):
        worker.kill()

_DIED = object()  # _MathPool._try's verdict when the worker it used was dead


class _MathPool:
    """``size`` workers, each serving one call at a time; safe to call from any thread.

    ``warm_up`` starts the workers and waits until they are ready; the first call does it if nobody has. After
    that a caller never starts a worker itself: a killed or retired worker is replaced in a background thread,
    and callers wait for an idle worker within their own time budget.
    """

    def __init__(self, size: int, memory_bytes: int = MATH_MEMORY_BYTES) -> None:
        self._size, self._memory_bytes = size, memory_bytes
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._cond = threading.Condition()
        self._live = 0  # workers running or starting
        self._starting = 0
        self._warm = False

    def warm_up(self) -> None:
        """Start any missing worker and wait until none is starting; RuntimeError if then none is running."""
        self._fill()
        with self._cond:
            self._cond.wait_for(lambda: self._starting == 0)
            if self._live == 0:
                raise RuntimeError("no math-verify worker could start; see the errors logged above")
            self._warm = True

    def equal(self, golds: tuple[str, ...], pred: str, timeout_s: float) -> bool:
        """Whether ``pred`` matches a gold, decided within ``timeout_s`` of this call (else False, logged).

        A worker found dead (killed while idle, or on this very input) is replaced, and the comparison is
        tried once more on another worker within what is left of the budget.
        """
        if not self._warm or self._live == 0:
            # The one wait outside the budget: a cold pool (or one whose replacements all failed to start)
            # has no worker to wait for. Each start has _WORKER_START_S of its own; RuntimeError if none can.
            self.warm_up()
        deadline = time.monotonic() + timeout_s
        for _ in range(2):
            verdict = self._try(golds, pred, deadline, timeout_s)
            if verdict is not _DIED:
                return verdict
        _warn("two workers died on it", pred, golds)
        return False

    def _try(self, golds: tuple[str, ...], pred: str, deadline: float, timeout_s: float):
        """One comparison on an idle worker: its verdict, False past the deadline, or ``_DIED``."""
        worker = self._acquire(deadline)
        if worker is None:
            _warn(f"found no free worker within {timeout_s:g} s", pred, golds)
            return False
        try:
            match, retire = worker.run(golds, pred, deadline - time.monotonic())
        except TimeoutError:
            self._retire(worker)
            _warn(f"took longer than {timeout_s:g} s", pred, golds)
            return False
        except (EOFError, OSError, ValueError):  # ValueError: not a reply (it cannot happen; no matter)
            self._retire(worker)
            logger.warning("math reward: worker died (exit code %s); trying another (answer %.200r)",
                           worker.exitcode, pred)
            return _DIED
        if retire:
            self._retire(worker)
        else:
            self._idle.put(worker)
        return match

    def _acquire(self, deadline: float) -> _Worker | None:
        """An idle worker with time left before ``deadline``, or None."""
        try:
            worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if deadline - time.monotonic() <= 0:
            self._idle.put(worker)
            return None
        return worker

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker`` and start its replacement in the background."""
        worker.kill()
        with self._cond:
            self._live -= 1
        self._fill()

    def _fill(self) -> None:
        """Start workers in background threads until ``size`` are running or starting."""
        with self._cond:
            missing = self._size - self._live
            self._live += missing
            self._starting += missing
        for _ in range(missing):
            threading.Thread(target=self._start_one, daemon=True, name="arpo-math-verify-start").start()

    def _start_one(self) -> None:
        try:
            worker = _Worker(self._memory_bytes)
        except Exception:
            logger.exception("math reward: a math-verify worker failed to start")
            worker = None
        with self._cond:
            if worker is None:
                self._live -= 1
            else:
                self._idle.put(worker)
            self._starting -= 1
            self._cond.notify_all()


def _warn(what: str, pred: str, golds: tuple[str, ...]) -> None:
    logger.warning("math reward: %s; scored 0 (answer %.200r, gold %.200r)", what, pred, golds)


_POOL = _MathPool(MATH_WORKERS)


def warm_up() -> None:
    """Start the math-verify workers and wait until they are ready (~0.4 s each, in parallel; up to
    ``_WORKER_START_S`` on a cold disk). A trainer that scores ``math`` calls this once before its first
    batch; otherwise the first ``math_reward`` call does it, outside its time budget. RuntimeError if no
    worker can start."""
    _POOL.warm_up()


def math_reward(
    response: str,
    ground_truth: Sequence[str],
    *,
    answer_tag: str = "answer",
    timeout_s: float = MATH_TIMEOUT_S,
) -> float:
    """1.0 if the answer is mathematically equivalent to any accepted answer (math-verify), else 0.0.

    The call takes at most ``timeout_s`` seconds of wall-clock time (any thread), waiting for a free worker
    included; past it, 0.0 with a warning. Only a cold pool's start is not counted (see ``warm_up``).
    """
    pred = extract_answer(response, answer_tag)
    answers = _answers(ground_truth)
    if pred is None or not answers:
        return 0.0
    return float(_POOL.equal(answers, pred, timeout_s))


# ----------------------------------------------------------------------------------------------------------
# Registry.

_BUILTIN: dict[str, RewardFn] = {
    "exact_match": exact_match_reward,
    "f1": f1_reward,
    "math": math_reward,
    "format": format_reward,
}
# data.reward = auto: exact data_source names first, then substrings of the lower-cased name, then f1.
AUTO_EXACT = {"arith": "math", "kbqa": "exact_match"}
AUTO_MATH_HINTS = ("math", "gsm", "aime", "amc", "arith", "numina", "dapo", "olympiad", "deepscaler", "svamp")
AUTO_DEFAULT = "f1"


def auto_reward_name(data_source: str) -> str:
    """The reward ``auto`` uses for ``data_source``: ``arith`` -> math, ``kbqa`` -> exact_match, a name that
    contains one of ``AUTO_MATH_HINTS`` (e.g. ``openai/gsm8k``, ``aime24``, ``math500``) -> math, else f1
    (the QA sets: nq, hotpotqa, 2wiki, musique, bamboogle, ...)."""
    if data_source in AUTO_EXACT:
        return AUTO_EXACT[data_source]
    lowered = data_source.lower()
    return "math" if any(hint in lowered for hint in AUTO_MATH_HINTS) else AUTO_DEFAULT


def random_reward(p: float, seed: int = 0) -> RewardFn:
    """The control reward: Bernoulli(``p``) drawn from a hash of (seed, ground truth, response)."""
    if not 0.0 <= p <= 1.0:
        raise RewardError(f"random reward: p must be in [0, 1], got {p}")

    def reward(response: str, ground_truth: Sequence[str]) -> float:
        key = "\0".join([str(seed), *_answers(ground_truth), response]).encode("utf-8", "surrogatepass")
        draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2.0**64
        return float(draw < p)

    return reward


def get_reward_fn(name: str | Callable, data_source: str | None = None, *, random_p: float = 0.5,
                  seed: int = 0) -> Callable[[str, Sequence[str], Any], float]:
    """The reward function named ``name``: one of ``config.REWARD_FNS``, ``'package.module:function'``, or a
    Python callable. Returns ``fn(response, ground_truth, example) -> float``.

    ``auto`` needs ``data_source`` (see ``auto_reward_name``). ``random`` is ``random_reward(random_p, seed)``.
    A custom function (imported or passed) takes ``(response, ground_truth)`` or ``(response, ground_truth,
    example)`` (the ``Example``: its ``extra`` holds the row's other fields); it is checked to be callable with one
    of these and wrapped so that a return value other than a bool or a finite number in [0, 1] raises.
    """
    if callable(name):
        return _checked(name, getattr(name, "__qualname__", repr(name)))
    if name == "random":
        return _two_args(random_reward(random_p, seed))
    if name == "auto":
        if data_source is None:
            raise RewardError("reward 'auto' picks a function per data_source; none was given")
        return _two_args(_BUILTIN[auto_reward_name(data_source)])
    if name in _BUILTIN:
        return _two_args(_BUILTIN[name])
    if ":" in name:
        return _checked(import_callable(name, "reward", RewardError), name)
    raise RewardError(f"unknown reward {name!r}; expected one of {', '.join(REWARD_FNS)}, "
                      "an import path 'package.module:function' or a callable")


def score_rollouts(reward: str | Callable, examples: Sequence, rollouts: Sequence, *, random_p: float = 0.5,
                   seed: int = 0) -> list[list[float]]:
    """The reward of every leaf of every rollout: ``out[i][j]`` scores leaf j of ``rollouts[i]`` (the sampler's
    ``Rollout``: its ``leaves`` have a ``text``) against ``examples[i]`` (an ``Example``: its ``ground_truth``,
    and its ``data_source`` for ``auto``), with the reward ``reward`` (a name or a callable; ``random_p``,
    ``seed``: see ``get_reward_fn``)."""
    out, fns = [], {}
    for example, rollout in zip(examples, rollouts):
        if example.data_source not in fns:  # resolved (and a callable's signature read) once per source
            fns[example.data_source] = get_reward_fn(reward, example.data_source, random_p=random_p, seed=seed)
        fn = fns[example.data_source]
        out.append([float(fn(leaf.text, example.ground_truth, example)) for leaf in rollout.leaves])
    return out


def _two_args(fn: RewardFn) -> Callable[[str, Sequence[str], Any], float]:
    """A built-in ``fn(response, ground_truth)`` in the three-argument form (``__wrapped__`` is ``fn``)."""

    @functools.wraps(fn)
    def reward(response: str, ground_truth: Sequence[str], example: Any = None) -> float:
        return fn(response, ground_truth)

    return reward


def _checked(fn: Callable, path: str) -> Callable[[str, Sequence[str], Any], float]:
    """``fn`` (2 or 3 positional parameters) with its return value checked: a bool, or a finite real number in
    [0, 1]; returned as float."""
    with_example = _arity(fn, path) == 3

    @functools.wraps(fn)
    def reward(response: str, ground_truth: Sequence[str], example: Any = None) -> float:
        value = fn(response, ground_truth, example) if with_example else fn(response, ground_truth)
        if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):  # NaN fails the range test too
            raise RewardError(f"reward {path!r} returned {value!r} ({type(value).__name__}); "
                              "expected a float in [0, 1] or a bool")
        return float(value)

    return reward


def _arity(fn: Callable, path: str) -> int:
    """3 when ``fn`` accepts (response, ground_truth, example), 2 when it accepts (response, ground_truth)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: assume the two-argument form
        return 2
    for n in (3, 2):
        try:
            sig.bind(*range(n))
            return n
        except TypeError:
            continue
    raise RewardError(f"reward {path!r}: must accept (response, ground_truth) or (response, ground_truth, "
                      f"example); its signature is {sig}")
