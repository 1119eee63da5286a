"""What every tool returns, and the protocol a tool implements.

A tool is a callable ``tool(query: str) -> ToolResult``. It never raises for anything the model wrote: a crash,
a timeout or bad input becomes a ``ToolResult`` with ``ok=False`` whose ``text`` the model sees. Tools must be
safe to call from several threads at once (the rollout runs calls concurrently in a thread pool).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call.

    text:      what the model sees inside ``<result>…</result>`` (already truncated by the tool)
    ok:        False when the call failed (error, timeout, limit); the text then says why
    elapsed_s: wall-clock seconds the call took
    truncated: True when ``text`` was cut to the tool's output limit
    """

    text: str
    ok: bool = True
    elapsed_s: float = 0.0
    truncated: bool = False


class Tool(Protocol):
    name: str

    def __call__(self, query: str) -> ToolResult: ...


def truncate_utf8(text: str, max_bytes: int, marker: str = "\n…[truncated]") -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes (never mid-character), appending ``marker`` when cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", errors="ignore") + marker, True
