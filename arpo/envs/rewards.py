"""Outcome rewards: a response's final answer scored against an example's accepted answers, in [0, 1].

Every reward function has the signature ``fn(response, ground_truth) -> float``; ``ground_truth`` holds one or
more accepted answers and the score is the best over them. The answer is the content of the last complete
``<answer>...</answer>`` (see ``extract_answer``); a response without one scores 0 (``format`` excepted, which
scores the tags themselves).

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

Time limit: sympy can run for ever (``9^{9^{9}}`` against ``1`` does), and math-verify's own limit uses
``signal.alarm``, which raises in any thread but the main one. So parsing and comparison run in a small pool
of worker processes (``spawn`` context, started on first use, at most ``MATH_WORKERS``); the caller waits at
most ``timeout_s`` (default ``MATH_TIMEOUT_S``) from any thread, and a late worker is killed, replaced on the
next call, logged as a warning and scored 0. Measured cost once warm: 0.1 ms of IPC per call; 0.7 ms per call
for integers, 2-3 ms for fractions vs decimals, ~9 ms for polynomials that need ``simplify``; starting a
worker (once, and again after a kill) takes ~0.5 s. As with any ``spawn`` start, a script that scores
``math`` must keep its top-level code under ``if __name__ == "__main__":``.

``get_reward_fn`` resolves a ``data.reward`` name, including ``auto`` (per data_source) and custom
``'package.module:function'`` rewards, whose return values are checked.
"""
from __future__ import annotations

import collections
import functools
import importlib
import logging
import multiprocessing
import numbers
import queue
import re
import string
import threading
from collections.abc import Callable, Sequence

from arpo.config import REWARD_FNS
from arpo.envs.prompts import KNOWN_TOOLS

__all__ = [
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
]

logger = logging.getLogger(__name__)

MATH_TIMEOUT_S = 5.0
MATH_WORKERS = 4
_WORKER_START_S = 120.0  # a worker imports sympy; a cold disk can take a while

RewardFn = Callable[[str, Sequence[str]], float]


class RewardError(ValueError):
    """An unknown or unusable reward function (the message names it)."""


# ----------------------------------------------------------------------------------------------------------
# Answers and text normalisation.


def extract_answer(response: str, tag: str = "answer") -> str | None:
    """The stripped content of the last complete ``<tag>...</tag>`` in ``response``, or None if there is none.

    A complete pair is an opening tag and the first closing tag after it, with no other opening tag in
    between: with nested or stray opening tags the innermost pair wins (``<answer>a <answer>b</answer>``
    gives ``b``), a stray closing tag is ignored, and an unclosed ``<answer>`` after a complete one does not
    hide it. The last pair is taken because agents revise: a final answer supersedes one written (or quoted)
    before it.
    """
    match = _last_pair(response, tag)
    return None if match is None else match.group(1).strip()


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

    Precisely: ``extract_answer`` finds a complete ``<answer>...</answer>``, and the text after that answer's
    ``</answer>`` holds no unclosed tool call, i.e. no ``<python>`` or ``<search>`` without a matching closing
    tag after it (a call the model started after answering and never finished, as a truncated response has).
    """
    answer = _last_pair(response, answer_tag)
    return float(answer is not None and _UNCLOSED_TOOL.search(response, answer.end()) is None)


_UNCLOSED_TOOL = re.compile(rf"<({'|'.join(KNOWN_TOOLS)})>(?![\s\S]*</\1>)")


# ----------------------------------------------------------------------------------------------------------
# Math: math-verify in worker processes with a wall-clock limit.


def _math_text(text: str) -> str:
    """Text as math-verify's LaTeX extractor expects it: bare content is wrapped in ``$...$``."""
    return text if re.search(r"\$|\\\(|\\\[|\\boxed", text) else f"${text}$"


def _math_equal(golds: tuple[str, ...], pred: str) -> bool:
    """True if ``pred`` is equivalent to any of ``golds`` (runs in a worker; no time limit of its own)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed_pred = parse(_math_text(pred), extraction_config=configs, parsing_timeout=None)
    if not parsed_pred:
        return False
    return any(
        verify(parse(_math_text(g), extraction_config=configs, parsing_timeout=None), parsed_pred,
               timeout_seconds=None)
        for g in golds
    )


def _serve(conn) -> None:
    """Worker loop: receive ``(golds, pred)``, send back whether they match, until the pipe closes."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": ours is outside it
    import math_verify  # noqa: F401  (imported before "ready", so start-up is not charged to a call)

    conn.send("ready")
    while True:
        try:
            golds, pred = conn.recv()
        except EOFError:
            return
        try:
            conn.send(_math_equal(golds, pred))
        except Exception:  # a math-verify bug is a wrong answer, not a dead worker
            conn.send(False)


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="arpo-math-verify")
        self.proc.start()
        child.close()
        if not self.conn.poll(_WORKER_START_S) or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError(f"math-verify worker did not start within {_WORKER_START_S:.0f} s")

    def run(self, golds: tuple[str, ...], pred: str, timeout_s: float) -> bool:
        """The worker's verdict; TimeoutError if it takes longer than ``timeout_s``, EOFError if it died."""
        self.conn.send((golds, pred))
        if not self.conn.poll(timeout_s):
            raise TimeoutError
        return self.conn.recv()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


class _MathPool:
    """At most ``size`` workers, each serving one call at a time; safe to call from any thread."""

    def __init__(self, size: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(size)

    def equal(self, golds: tuple[str, ...], pred: str, timeout_s: float) -> bool:
        with self._slots:
            worker = self._take()
            try:
                result = worker.run(golds, pred, timeout_s)
            except (TimeoutError, EOFError, OSError) as err:
                worker.kill()
                why = f"took longer than {timeout_s:g} s" if isinstance(err, TimeoutError) else "crashed"
                logger.warning("math reward: comparison %s; scored 0 (answer %.200r, gold %.200r)",
                               why, pred, golds)
                return False
            self._idle.put(worker)
            return result

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return _Worker(self._ctx)


_POOL = _MathPool(MATH_WORKERS)


def math_reward(
    response: str,
    ground_truth: Sequence[str],
    *,
    answer_tag: str = "answer",
    timeout_s: float = MATH_TIMEOUT_S,
) -> float:
    """1.0 if the answer is mathematically equivalent to any accepted answer (math-verify), else 0.0.

    The comparison gets at most ``timeout_s`` seconds of wall-clock time (any thread); past it, 0.0.
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


def get_reward_fn(name: str, data_source: str | None = None) -> RewardFn:
    """The reward function named ``name``: one of ``config.REWARD_FNS`` or ``'package.module:function'``.

    ``auto`` needs ``data_source`` (see ``auto_reward_name``). A custom function is imported, checked to be
    callable and wrapped so that a return value other than a bool or a finite number in [0, 1] raises.
    """
    if name == "auto":
        if data_source is None:
            raise RewardError("reward 'auto' picks a function per data_source; none was given")
        return _BUILTIN[auto_reward_name(data_source)]
    if name in _BUILTIN:
        return _BUILTIN[name]
    if ":" in name:
        return _checked(_import_reward(name), name)
    raise RewardError(f"unknown reward {name!r}; expected one of {', '.join(REWARD_FNS)} "
                      "or an import path 'package.module:function'")


def _import_reward(path: str) -> Callable:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RewardError(f"reward {path!r}: cannot import module {module_name!r}: {err}") from err
    if not hasattr(module, attr):
        raise RewardError(f"reward {path!r}: module {module_name!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise RewardError(f"reward {path!r}: {module_name}.{attr} is not callable "
                          f"(it is a {type(fn).__name__})")
    return fn


def _checked(fn: Callable, path: str) -> RewardFn:
    """``fn`` with its return value checked: a bool, or a finite real number in [0, 1]; returned as float."""

    @functools.wraps(fn)
    def reward(response: str, ground_truth: Sequence[str]) -> float:
        value = fn(response, ground_truth)
        if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):  # NaN fails the range test too
            raise RewardError(f"reward {path!r} returned {value!r} ({type(value).__name__}); "
                              "expected a float in [0, 1] or a bool")
        return float(value)

    return reward
