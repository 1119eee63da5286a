"""Native JSON tool calls (``tools.format: json``): the Qwen2.5 / Hermes convention that chat templates render
from ``tools=[...]``, and the result frame read from the tokenizer's own chat template.

The model calls a tool by writing ``<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>``
(newlines around the JSON as the templates write them, or none); the final answer stays ``<answer>…</answer>``.
A turn of generation ends at the first ``</tool_call>`` or ``</answer>`` (the engine's stop strings).
``parse_json_action`` applies these rules to a turn's text; they are the tag format's (``arpo.tools.parser``)
with a JSON body:

1. The action is decided by the FIRST closing tag, ``</tool_call>`` or ``</answer>``; anything after it is not
   part of the turn (``Action.end``). So the first complete call ends the turn and a second one is cut off.
2. Its body is the text between that closing tag and the LAST opening tag of the same name before it, stripped
   of whitespace; one Markdown fence around the JSON (```` ```json … ``` ````) is unwrapped.
3. A closing tag without its opening tag is an ``invalid`` action (no tool runs; the error is the result).
4. No closing tag: a ``none`` action; an opening tag left open is reported in ``Action.error`` and never runs.
5. The body must be one JSON object (RFC 8259: ``NaN``/``Infinity`` are invalid) with a string ``"name"`` naming
   an enabled tool and ``"arguments"`` holding exactly that tool's one argument (``ToolSpec.argument``: python's
   ``code``, search's ``query``) as a JSON string. Otherwise the action is ``invalid`` and the model sees an
   error result saying what was wrong:
   - malformed JSON, nesting too deep for the parser (RecursionError is caught) → "invalid JSON …";
   - a duplicate key in any object → error (neither copy wins: the call is ambiguous);
   - not an object, no string ``name``, an unknown tool, no ``arguments`` → error;
   - ``arguments`` given as a string (OpenAI-style models emit it so) is parsed as JSON and must be an object;
   - a missing argument key, or any extra key in ``arguments`` → error naming the expected key;
   - a non-string argument value (a number, boolean, null, list, object) → error, never ``str()`` of it: the
     schema says string and a silent conversion would hide the mistake. Numbers are never converted at all
     (no int of 100,000 digits, no ``1e999999`` → inf), so their size costs nothing;
   - a string with a lone surrogate (``"\\ud800"``, not encodable as UTF-8) → error.
   Top-level keys other than ``name`` and ``arguments`` (an ``"id"``, say) are ignored. The argument value is
   passed to the tool exactly as decoded (not stripped).

The tool's result goes back in the chat template's tool role: ``result_frame(tokenizer)`` renders a user turn,
an assistant turn and a tool message with ``add_generation_prompt=True`` and cuts the text around the marks.
For Qwen2.5's template that gives ``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n`` before the result and
``\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n`` after it: the same text the template renders for a
conversation in which the assistant's content was the ``<tool_call>…</tool_call>`` it generated. A template that
cannot render a tool message is an error naming the tokenizer.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import ToolSpec
from .parser import _FENCE, Action

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_ASSISTANT_MARK, _RESULT_MARK = "ARPOASSISTANTMARK", "ARPORESULTMARK"
_TAG = re.compile(r"</?[A-Za-z_][A-Za-z0-9_.-]*>")


class TemplateError(ValueError):
    """A chat template that cannot render what the JSON tool-call format needs (tools, a tool message)."""


class _CallError(ValueError):
    """Why a call's JSON is not a valid call (the model sees the message)."""


class _Number:
    """A JSON number, kept as its text: never converted, so its size costs nothing (argument values must be
    strings anyway)."""

    def __init__(self, text: str):
        self.text = text


def stop_strings(answer_tag: str = "answer") -> list[str]:
    """The closing tags a generation turn stops at."""
    return [CALL_CLOSE, f"</{answer_tag}>"]


def parse_json_action(text: str, tools: Sequence[ToolSpec], answer_tag: str = "answer") -> Action:
    """The action ``text`` (one turn of generated text) ends with, by the module's rules."""
    answer_close = f"</{answer_tag}>"
    hits = [(p, tag) for p, tag in ((text.find(CALL_CLOSE), CALL_CLOSE), (text.find(answer_close), answer_close))
            if p >= 0]
    if not hits:
        return Action("none", end=len(text), error=_unclosed(text, answer_tag))
    pos, close = min(hits)
    end = pos + len(close)
    open_tag = "<" + close[2:]
    start = text.rfind(open_tag, 0, pos)
    if start < 0:
        return Action("invalid", close[2:-1], end=end, error=f"{close} without {open_tag}")
    body = text[start + len(open_tag): pos].strip()
    if close == answer_close:
        return Action("answer", answer_tag, body, end)
    fenced = _FENCE.match(body)
    try:
        name, argument = _call(fenced.group(1) if fenced else body, {s.name: s for s in tools})
    except _CallError as err:
        return Action("invalid", "tool_call", end=end, error=f"invalid tool call: {err}")
    return Action("tool", name, argument, end)


def _unclosed(text: str, answer_tag: str) -> str | None:
    opened = [(text.rfind(tag), tag) for tag in (CALL_OPEN, f"<{answer_tag}>")]
    opened = [o for o in opened if o[0] >= 0]
    return f"unclosed {max(opened)[1]}" if opened else None


def _call(body: str, specs: Mapping[str, ToolSpec]) -> tuple[str, str]:
    """(tool name, argument) of a call's JSON body, or ``_CallError`` saying what is wrong."""
    call = _loads(body, "invalid JSON")
    if not isinstance(call, dict):
        raise _CallError(f'expected a JSON object {{"name": ..., "arguments": {{...}}}}, got {_kind(call)}')
    name = call.get("name")
    if not isinstance(name, str):
        raise _CallError(f'"name" must be a string naming a tool, got {_kind(name) if "name" in call else "none"}')
    spec = specs.get(name)
    if spec is None:
        raise _CallError(f"unknown tool {_show(name)}; available: {', '.join(specs) or 'none'}")
    if "arguments" not in call:
        raise _CallError(f'no "arguments"; {name} takes {{"{spec.argument}": "..."}}')
    args = call["arguments"]
    if isinstance(args, str):  # OpenAI-style: the arguments object serialised as a string
        args = _loads(args, '"arguments" is a string but not valid JSON')
    if not isinstance(args, dict):
        raise _CallError(f'"arguments" must be an object {{"{spec.argument}": "..."}}, got {_kind(args)}')
    extra = [k for k in args if k != spec.argument]
    if extra or spec.argument not in args:
        got = ", ".join(_show(k) for k in extra[:5]) or "none"
        raise _CallError(f'{name} takes exactly one argument "{spec.argument}" (a string); got {got}')
    value = args[spec.argument]
    if not isinstance(value, str):
        raise _CallError(f'argument "{spec.argument}" must be a string, got {_kind(value)}')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _CallError(f'argument "{spec.argument}" is not valid Unicode (a lone surrogate)') from None
    return name, value


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object, parse_int=_Number, parse_float=_Number,
                          parse_constant=_constant)
    except _CallError:
        raise
    except RecursionError:
        raise _CallError(f"{what}: nested too deeply") from None
    except ValueError as err:  # json.JSONDecodeError and anything a hook raised
        raise _CallError(f"{what}: {err}") from None


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _CallError(f"duplicate key {_show(key)} in a JSON object")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _CallError(f"invalid JSON: {name} is not a JSON value")


def _kind(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", dict: "an object", list: "an array", _Number: "a number",
             type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _show(text: str, limit: int = 40) -> str:
    """A quoted, ASCII-safe, bounded rendering of model-written text for an error message."""
    shown = json.dumps(text[:limit] if isinstance(text, str) else str(text)[:limit])
    return shown + ("…" if isinstance(text, str) and len(text) > limit else "")


# ----------------------------------------------------------------------------------------------------------
# The result frame, from the chat template.


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def result_frame(tokenizer) -> tuple[str, str]:
    """(before, after): the text the chat template puts around a tool message's content when it follows an
    assistant turn and opens the next assistant turn (see the module docstring)."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _ASSISTANT_MARK},
                {"role": "tool", "content": _RESULT_MARK, "name": "tool"}]
    why = f"tokenizer {_name(tokenizer)!r}: its chat template cannot render a tool message, which tools.format " \
          "json needs (use a chat template that renders tools, e.g. Qwen2.5's, or tools.format: tags)"
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(why + "; it has no chat template")
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # jinja raises whatever the template's author chose
        raise TemplateError(f"{why}; rendering one failed: {type(err).__name__}: {err}") from None
    a, r = text.find(_ASSISTANT_MARK), text.find(_RESULT_MARK)
    if a < 0 or r < a or text.count(_RESULT_MARK) != 1:
        raise TemplateError(f"{why}; it dropped the assistant's or the tool's content:\n{text}")
    return text[a + len(_ASSISTANT_MARK): r], text[r + len(_RESULT_MARK):]


def check_renders_tools(tokenizer, specs: Sequence[ToolSpec]) -> None:
    """A ``TemplateError`` unless the chat template renders ``tools=[...]`` (each tool's name appears in the
    prompt and the prompt differs from the one without tools)."""
    messages = [{"role": "user", "content": "x"}]
    try:
        plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with_tools = tokenizer.apply_chat_template(messages, tools=[s.schema() for s in specs],
                                                   add_generation_prompt=True, tokenize=False)
    except Exception as err:
        raise TemplateError(f"tokenizer {_name(tokenizer)!r}: rendering its chat template with tools failed: "
                            f"{type(err).__name__}: {err}") from None
    if specs and (with_tools == plain or not all(s.name in with_tools for s in specs)):
        raise TemplateError(f"tokenizer {_name(tokenizer)!r}: its chat template ignores tools=[...], so the model "
                            "would never see the tools' schemas; tools.format json needs a template that renders "
                            "them (e.g. Qwen2.5's), or use tools.format: tags")


def frame_tags(before: str, after: str) -> list[str]:
    """The XML-like tags in the result frame (``<tool_response>``, ``</tool_response>`` for Qwen2.5): escaped in
    tool text so that a tool cannot close its result early (special tokens such as ``<|im_end|>`` are kept as
    text by ``split_special_tokens`` instead)."""
    return sorted(set(_TAG.findall(before + after)), key=len, reverse=True)
