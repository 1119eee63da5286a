"""User tools: any callable ``(query: str) -> str | ToolResult`` made safe to hand to the model.

``custom_tool(name, fn)`` wraps ``fn`` so that whatever it does, the rollout gets a ``ToolResult``:

- a ``str`` becomes the result text, cut to ``max_output_bytes`` UTF-8 bytes (``ToolResult.truncated``);
  a ``ToolResult`` is kept (its text cut the same way);
- anything else it returns (``None``, a number, bytes, ...) is an error result naming the type;
- an exception is an error result naming it;
- a call still running after ``timeout_s`` is an error result ("timed out after T s"). Python cannot stop a
  thread, so the call is left to finish in a daemon thread whose result is dropped; ``abandoned`` counts them.

The description the model reads comes from ``description=``, else ``fn.description``, else the first line of
``fn``'s docstring; a tool with none of them is an error (the model could not know what it does). The argument
name (``<name>argument</name>``, the key of JSON ``arguments``) comes from ``argument=``, else ``fn.argument``,
else the name of ``fn``'s first parameter, else ``"query"``.

``load_factory("package.module:factory")`` imports a factory for ``tools.custom``: called with no arguments,
it returns the tool callable.
"""
from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable

from ..config import import_callable
from .base import ToolResult, ToolSpec, truncate_utf8


class CustomToolError(ValueError):
    """A user tool that cannot be used (no description, not callable, a bad name or factory)."""


class CustomTool:
    """``fn`` behind the ``Tool`` protocol: never raises, never hangs the caller past ``timeout_s``."""

    def __init__(self, spec: ToolSpec, fn: Callable, *, timeout_s: float, max_output_bytes: int):
        self.spec, self.name, self.fn = spec, spec.name, fn
        self.timeout_s, self.max_output_bytes = timeout_s, max_output_bytes
        self.abandoned = 0

    def __call__(self, query: str) -> ToolResult:
        start = time.perf_counter()
        box: list = []
        worker = threading.Thread(target=self._run, args=(query, box), daemon=True, name=f"arpo-tool-{self.name}")
        worker.start()
        worker.join(self.timeout_s)
        elapsed = time.perf_counter() - start
        if not box:
            self.abandoned += 1
            return ToolResult(f"Error: the {self.name} tool timed out after {self.timeout_s:g} s", ok=False,
                              elapsed_s=elapsed)
        return self._result(box[0], elapsed)

    def _run(self, query: str, box: list) -> None:
        try:
            box.append(self.fn(query))
        except BaseException as err:  # noqa: BLE001 (a user tool's failure is the model's result text)
            box.append(err)

    def _result(self, value, elapsed: float) -> ToolResult:
        if isinstance(value, BaseException):
            return ToolResult(f"Error: the {self.name} tool failed: {type(value).__name__}: {value}", ok=False,
                              elapsed_s=elapsed)
        if isinstance(value, ToolResult) and isinstance(value.text, str):
            text, cut = truncate_utf8(value.text, self.max_output_bytes)
            return ToolResult(text, value.ok, elapsed, value.truncated or cut)
        if isinstance(value, str):
            text, cut = truncate_utf8(value, self.max_output_bytes)
            return ToolResult(text, True, elapsed, cut)
        return ToolResult(f"Error: the {self.name} tool returned {type(value).__name__}, not text", ok=False,
                          elapsed_s=elapsed)


def custom_tool(name: str, fn: Callable, *, description: str | None = None, argument: str | None = None,
                timeout_s: float = 10.0, max_output_bytes: int = 2048) -> CustomTool:
    """``fn`` as a tool named ``name`` (see the module docstring for what the model sees in every case)."""
    if not callable(fn):
        raise CustomToolError(f"tool {name!r}: expected a callable (query: str) -> str | ToolResult, "
                              f"got {type(fn).__name__}")
    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
        raise CustomToolError(f"tool {name!r}: timeout_s must be a positive finite number, got {timeout_s!r}")
    description = description or getattr(fn, "description", None) or _first_line(fn.__doc__)
    if not description:
        raise CustomToolError(f"tool {name!r}: no description; give {getattr(fn, '__name__', 'it')} a docstring, a "
                              "`description` attribute or pass description=... (the model reads it)")
    try:
        spec = ToolSpec(name, description, argument or getattr(fn, "argument", None) or _first_parameter(fn))
    except ValueError as err:
        raise CustomToolError(str(err)) from None
    return CustomTool(spec, fn, timeout_s=float(timeout_s), max_output_bytes=max_output_bytes)


def load_factory(path: str) -> Callable:
    """The tool made by the factory at ``path`` (``package.module:factory``, called with no arguments)."""
    return import_callable(path, "tool factory", CustomToolError)()


def _first_parameter(fn: Callable) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return "query"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional[0].name if positional else "query"


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
