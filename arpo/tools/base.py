"""What every tool returns, how a tool is described to the model, and the protocol a tool implements.

A tool is a callable ``tool(query: str) -> ToolResult``. It never raises for anything the model wrote: a crash,
a timeout or bad input becomes a ``ToolResult`` with ``ok=False`` whose ``text`` the model sees. Tools must be
safe to call from several threads at once (the rollout runs calls concurrently in a thread pool).

A tool is described to the model by its ``ToolSpec``: its name, one sentence saying what it does and returns,
and the name of its one string argument. The tag format shows it as ``<name>argument</name> description``;
the JSON tool-call format passes ``ToolSpec.schema()`` to the chat template's ``tools=[...]``.
"""
from __future__ import annotations

import dataclasses
import re
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
    spec: ToolSpec

    def __call__(self, query: str) -> ToolResult: ...


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_NAMES = ("answer", "result", "tool_call", "tool_response", "think")


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """How a tool is described to the model.

    name:        the tag / function name the model calls it by (an identifier, not one of ``RESERVED_NAMES``)
    description: what it does and returns, one sentence (goes into the system prompt)
    argument:    the name of its one string argument (``<name>argument</name>``; the key in JSON ``arguments``)
    """

    name: str
    description: str
    argument: str = "query"

    def __post_init__(self) -> None:
        for field in ("name", "argument"):
            value = getattr(self, field)
            if not (isinstance(value, str) and _NAME.match(value)):
                raise ValueError(f"tool {field} {value!r}: must be an identifier (letters, digits, _)")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"tool name {self.name!r} is reserved (reserved: {', '.join(RESERVED_NAMES)})")
        if not (isinstance(self.description, str) and self.description.strip()):
            raise ValueError(f"tool {self.name!r}: the description must be a non-empty string "
                             "(the model learns what the tool does from it)")

    def schema(self) -> dict:
        """The OpenAI-style function schema chat templates render from ``tools=[...]``."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": {self.argument: {"type": "string"}},
                           "required": [self.argument]}}}


BUILTIN_SPECS = {
    "python": ToolSpec("python", "runs Python code and returns what it prints.", "code"),
    "search": ToolSpec("search", "searches a knowledge base and returns passages.", "query"),
}


def truncate_utf8(text: str, max_bytes: int, marker: str = "\n…[truncated]") -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes (never mid-character), appending ``marker`` when cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", errors="ignore") + marker, True
