"""The tools of a run behind one door: per-trajectory call limit, failures as result text, a thread pool.

``ToolBox.submit(action, calls_made)`` returns a future that always resolves to a ``ToolResult``: a stray
closing tag, a call past the per-trajectory limit, an unknown tool and a tool that raises all become error
text the model sees, never an exception that stops a rollout. Calls run in a thread pool of
``tools.pool_size`` (the python sandbox blocks on a subprocess, search on SQLite or HTTP), so generation
continues while they run.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .base import Tool, ToolResult, ToolSpec
from .custom import CustomToolError, custom_tool, load_factory
from .formats import FORMATS, JsonFormat, TagFormat
from .parser import Action


class ToolBox:
    """Runs parsed tool calls. ``tools`` maps tag name → tool; ``max_calls`` is the per-trajectory limit;
    ``format`` is how the model calls them (``tools.format``: "tags" or "json", see ``call_format``)."""

    def __init__(self, tools: Mapping[str, Tool], max_calls: int, pool_size: int = 4, format: str = "tags"):
        if max_calls < 0 or pool_size < 1:
            raise ValueError(f"ToolBox: need max_calls >= 0 and pool_size >= 1, got {max_calls}, {pool_size}")
        if format not in FORMATS:
            raise ValueError(f"ToolBox: unknown tool-call format {format!r}; choose one of {', '.join(FORMATS)}")
        self.tools = dict(tools)
        self.max_calls = max_calls
        self.format = format
        self._pool = ThreadPoolExecutor(pool_size, thread_name_prefix="arpo-tool")
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # "<tool>.calls", "<tool>.failed", "rejected"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tools)

    @property
    def specs(self) -> list[ToolSpec]:
        """How each tool is described to the model, in call-name order."""
        return [tool.spec for tool in self.tools.values()]

    def call_format(self, tokenizer, answer_tag: str = "answer") -> TagFormat | JsonFormat:
        """The ``formats`` object for these tools (stop strings, parser, result encoding); the json format checks
        ``tokenizer``'s chat template here (``json_calls.TemplateError``)."""
        if self.format == "json":
            return JsonFormat(tokenizer, self.specs, answer_tag)
        return TagFormat(tokenizer, self.names, answer_tag)

    def submit(self, action: Action, calls_made: int) -> Future[ToolResult]:
        """Run ``action`` (kind "tool" or "invalid") for a trajectory that already made ``calls_made`` calls."""
        rejection = self._rejection(action, calls_made)
        if rejection is not None:
            self._count("rejected")
            done: Future[ToolResult] = Future()
            done.set_result(ToolResult(f"Error: {rejection}", ok=False))
            return done
        return self._pool.submit(self._run, action.name, action.content)

    def run(self, action: Action, calls_made: int) -> ToolResult:
        return self.submit(action, calls_made).result()

    def _rejection(self, action: Action, calls_made: int) -> str | None:
        if action.kind == "invalid":
            return action.error
        if action.kind != "tool":
            raise ValueError(f"ToolBox.submit needs a 'tool' or 'invalid' action, got {action.kind!r}")
        if action.name not in self.tools:
            return f"unknown tool <{action.name}>; available: {', '.join(self.tools) or 'none'}"
        if calls_made >= self.max_calls:
            return f"tool-call limit of {self.max_calls} reached; give your answer now."
        return None

    def _run(self, name: str, query: str) -> ToolResult:
        start = time.perf_counter()
        try:
            result = self.tools[name](query)
        except Exception as err:  # a tool bug must not stop the rollout: the model sees the error
            result = ToolResult(f"Error: the {name} tool failed: {type(err).__name__}: {err}", ok=False)
        if result.elapsed_s <= 0.0:  # the run's wall time when the tool did not say (rejections alone keep 0)
            result = dataclasses.replace(result, elapsed_s=max(time.perf_counter() - start, 1e-9))
        self._count(f"{name}.calls")
        if not result.ok:
            self._count(f"{name}.failed")
        return result

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def close(self) -> None:
        """Wait for the calls in flight (their futures still resolve to results), then stop the pool and the
        tools that hold processes (the python sandbox's zygote)."""
        self._pool.shutdown(wait=True)
        for tool in self.tools.values():
            if callable(close := getattr(tool, "close", None)):
                close()

    def __enter__(self) -> ToolBox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_toolbox(cfg, max_calls: int, default_index: Path | None = None,
                 extra: Mapping[str, Callable] | None = None) -> ToolBox:
    """The ToolBox of ``cfg`` (a ``ToolsConfig``): the python sandbox and/or search, as ``cfg.enabled`` says,
    with ``cfg.format`` as the tool-call format, then the user tools: ``cfg.custom`` (name -> ``package.module:factory``) and ``extra`` (name -> callable),
    each wrapped by ``custom.custom_tool`` (``cfg.custom_timeout_s``, ``cfg.max_output_bytes``).

    ``default_index`` is the search index used when ``cfg.search_index`` and ``cfg.search_url`` are null
    (the embedded kbqa corpus's, built on first use when None). A user tool named like another tool is an error.
    """
    tools = _builtin_tools(cfg, default_index)
    users = {name: load_factory(path) for name, path in cfg.custom.items()}
    for name, fn in (extra or {}).items():
        if name in users:
            raise CustomToolError(f"tool {name!r} is given twice: in tools.custom and as a Python tool")
        users[name] = fn
    for name, fn in users.items():
        if name in tools:
            raise CustomToolError(f"tool {name!r}: a built-in tool of that name is enabled (tools.enabled); "
                                  "rename yours or disable the built-in")
        tools[name] = custom_tool(name, fn, timeout_s=cfg.custom_timeout_s, max_output_bytes=cfg.max_output_bytes)
    return ToolBox(tools, max_calls, cfg.pool_size, cfg.format)


def _builtin_tools(cfg, default_index: Path | None) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    if "python" in cfg.enabled:
        from .python_sandbox import PythonSandbox

        tools["python"] = PythonSandbox(timeout_s=cfg.python_timeout_s, memory_mb=cfg.python_memory_mb,
                                        max_output_bytes=cfg.max_output_bytes,
                                        require_isolation=cfg.python_require_isolation)
    if "search" in cfg.enabled:
        from .search import make_search_tool

        if default_index is None and cfg.search_index is None and cfg.search_url is None:
            from .knowledge_base import kbqa_index

            default_index = kbqa_index()
        tools["search"] = make_search_tool(cfg, default_index)
    return tools
