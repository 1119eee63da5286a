"""The built-in system prompt: how the agent calls tools and gives its answer (used when data.system_prompt is null)."""
from __future__ import annotations

from collections.abc import Sequence

from arpo.tools.base import BUILTIN_SPECS, ToolSpec

KNOWN_TOOLS = tuple(BUILTIN_SPECS)


def tool_specs(tools: Sequence[str | ToolSpec]) -> list[ToolSpec]:
    """``tools`` as specs: a name stands for the built-in tool of that name (``KNOWN_TOOLS``)."""
    unknown = [t for t in tools if isinstance(t, str) and t not in BUILTIN_SPECS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; known: {', '.join(KNOWN_TOOLS)} (pass a ToolSpec for others)")
    return [BUILTIN_SPECS[t] if isinstance(t, str) else t for t in tools]


def system_prompt(tools: Sequence[str | ToolSpec], tool_format: str = "tags") -> str:
    """The system message for an agent that may call ``tools`` (built-in names or ``ToolSpec``s, in that order).

    ``tool_format`` "tags" lists the call syntax ``<name>argument</name> description``; "json" lists nothing
    (the chat template renders the tools' schemas and its own call syntax from ``tools=[...]``) and only says to
    use them. Both ask for the final answer as ``<answer>...</answer>``."""
    specs = tool_specs(tools)
    lines = ["You solve the task step by step."]
    if specs and tool_format == "json":
        lines.append("Call the tools when they help; each result comes back as a tool message.")
    elif specs:
        lines.append("Tools: " + " ".join(f"<{s.name}>{s.argument}</{s.name}> {s.description}" for s in specs))
        lines.append("Each result comes back as <result>...</result>.")
    lines.append("Give the final answer as <answer>...</answer>.")
    return "\n".join(lines)
