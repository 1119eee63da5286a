"""The math reward's worker process: ``python -m arpo.envs._math_worker MEMORY_BYTES``.

``arpo.envs.rewards`` starts it with ``subprocess`` (not ``multiprocessing``), so it never imports the
parent's ``__main__`` module: its start-up costs the same in any program (~0.4 s, mostly importing sympy),
whatever the script that scores ``math`` imports or runs at its top level.

Protocol, JSON lines over the pipes (``json.dumps`` escapes newlines, so a message is one line):
- the worker caps its address space (``RLIMIT_AS``) at ``MEMORY_BYTES``, imports math-verify and writes
  ``"ready"``;
- then per request line ``{"golds": [...], "pred": "..."}`` it writes ``{"match": bool, "retire": bool}``;
- it exits at end of input, or after a reply with ``retire`` set (its peak resident memory has passed half the
  cap, so the parent replaces it with a fresh process).

Replies go to a duplicate of the original stdout; the stdout file descriptor itself is pointed at stderr, so
that anything a library prints cannot corrupt the protocol. Nothing heavy is imported before the cap is set.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    memory_bytes = int(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the parent, which kills us
    _limit_memory(memory_bytes)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": the parent's is outside it
    import math_verify  # noqa: F401  (imported before "ready", so start-up is not charged to a call)

    _send(replies, "ready")
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            match = _math_equal(tuple(request["golds"]), request["pred"])
        except Exception:  # a math-verify bug (or MemoryError) is a wrong answer, not a dead worker
            match = False
        retire = _peak_rss_bytes() > memory_bytes // 2
        _send(replies, {"match": bool(match), "retire": retire})
        if retire:
            return


def _send(replies, message) -> None:
    replies.write(json.dumps(message).encode() + b"\n")
    replies.flush()


def _limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space at ``memory_bytes`` (or at a lower limit already in place)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = min(x for x in (memory_bytes, soft, hard) if x != resource.RLIM_INFINITY)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _peak_rss_bytes() -> int:
    """This process's own peak resident memory. Not ``ru_maxrss``: Linux carries the parent's peak over fork and
    exec into it, so a worker started by a trainer holding gigabytes would retire after every call."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def math_text(text: str) -> str:
    """Text as math-verify's LaTeX extractor expects it: bare content is wrapped in ``$...$``."""
    return text if re.search(r"\$|\\\(|\\\[|\\boxed", text) else f"${text}$"


def _math_equal(golds: tuple[str, ...], pred: str) -> bool:
    """True if ``pred`` is equivalent to any of ``golds`` (no time limit of its own)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed_pred = parse(math_text(pred), extraction_config=configs, parsing_timeout=None)
    if not parsed_pred:
        return False
    return any(
        verify(parse(math_text(g), extraction_config=configs, parsing_timeout=None), parsed_pred,
               timeout_seconds=None)
        for g in golds
    )


if __name__ == "__main__":
    main()
