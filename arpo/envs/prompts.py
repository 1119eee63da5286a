"""The built-in system prompt: how the agent calls tools and gives its answer (used when data.system_prompt is null)."""
from __future__ import annotations

from collections.abc import Sequence

_TOOL_LINES = {
    "python": "<python>code</python> runs Python code and returns what it prints.",
    "search": "<search>query</search> searches a knowledge base and returns passages.",
}
KNOWN_TOOLS = tuple(_TOOL_LINES)


def system_prompt(tools: Sequence[str]) -> str:
    """The system message for an agent that may call ``tools`` (a subset of ``KNOWN_TOOLS``, in that order)."""
    unknown = [t for t in tools if t not in _TOOL_LINES]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; known: {', '.join(KNOWN_TOOLS)}")
    lines = ["You solve the task step by step."]
    if tools:
        lines.append("Tools: " + " ".join(_TOOL_LINES[t] for t in tools))
        lines.append("Each result comes back as <result>...</result>.")
    lines.append("Give the final answer as <answer>...</answer>.")
    return "\n".join(lines)
