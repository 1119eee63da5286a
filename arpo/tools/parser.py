"""Tool-call tags in generated text: which action a turn ends with, and the result tokens appended after it.

Agents talk in tags: ``<python>code</python>`` and ``<search>query</search>`` call tools (the names are the
enabled tools), ``<answer>…</answer>`` is the final answer. A turn of generation ends at the first closing tag
(the engine stops there: these are its stop strings). ``parse_action`` applies these rules to a turn's text:

1. The action is decided by the FIRST closing tag of any kind (``</python>``, ``</search>``, ``</answer>``);
   anything after it is not part of the turn (``Action.end`` says where the caller truncates).
2. Its content is the text between that closing tag and the LAST opening tag of the same name before it
   (nested ``<python>a<python>b</python>`` runs ``b``), stripped of surrounding whitespace. Other tags inside
   the content are plain text (``<python>s = "<search>"</python>`` runs that line). A repeated call in the same
   turn (``<python>a</python><python>b</python>``) runs only the first; the second is cut off.
3. A closing tag with no opening tag of its name before it is an ``invalid`` action: no tool runs, and the
   error text is returned to the model as the result.
4. No closing tag: a ``none`` action (the turn ended by EOS or the length limit). An opening tag left open is
   reported in ``Action.error`` ("unclosed <python>"); the unclosed call is never executed.
5. Python code wrapped in one Markdown fence (```` ```python … ``` ````, models often write it) is unwrapped.

A known consequence of rule 1: code that prints a literal closing tag of another tool (``print("</search>")``)
ends the turn at that string, exactly as an engine with static stop strings would.

Tool results go back as ``\\n<result>\\n{text}\\n</result>\\n`` (the text's trailing newlines dropped), encoded
once, without BOS or other special tokens (``encode_result``); the history is never re-tokenised. The tool's
text is encoded with ``split_special_tokens=True``: a printed ``<|im_end|>`` stays text, never an EOS or role
marker. Result tags inside it are escaped so a tool cannot close the result block early; characters UTF-8
cannot encode (lone surrogates) become "?".

The native JSON tool-call format (``tools.format: json``) is ``arpo.tools.json_calls``; ``arpo.tools.formats``
wraps both formats for the sampler.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
_FENCE = re.compile(r"\A```[A-Za-z0-9_+-]*[ \t]*\n(.*)\n[ \t]*```\Z", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Action:
    """What a turn of generated text ends with.

    kind:    "tool" (run ``name`` on ``content``), "answer" (final answer ``content``), "invalid" (a closing tag
             without its opening tag; ``error`` says which) or "none" (no closing tag in the text)
    name:    tool name for "tool", the answer tag for "answer", the offending tag name for "invalid"
    content: the call's code/query or the answer, whitespace-stripped ("" for none/invalid)
    end:     offset just past the closing tag (len(text) for "none"): text[end:] is not part of the turn
    error:   why the turn is invalid or what was left unclosed, else None
    """

    kind: str
    name: str | None = None
    content: str = ""
    end: int = 0
    error: str | None = None


def stop_strings(tools: Sequence[str], answer_tag: str = "answer") -> list[str]:
    """The closing tags a generation turn stops at (tools first, then the answer tag)."""
    return [f"</{t}>" for t in (*tools, answer_tag)]


def parse_action(text: str, tools: Sequence[str], answer_tag: str = "answer") -> Action:
    """The action ``text`` (one turn of generated text) ends with, by the module's rules."""
    names = (*tools, answer_tag)
    first = _first_closing(text, names)
    if first is None:
        return Action("none", end=len(text), error=_unclosed(text, names))
    pos, name = first
    close = f"</{name}>"
    end = pos + len(close)
    start = text.rfind(f"<{name}>", 0, pos)
    if start < 0:
        return Action("invalid", name, end=end, error=f"{close} without <{name}>")
    content = text[start + len(name) + 2 : pos].strip()
    if name == "python":
        fenced = _FENCE.match(content)
        content = fenced.group(1) if fenced else content
    return Action("answer" if name == answer_tag else "tool", name, content, end)


def _first_closing(text: str, names: Sequence[str]) -> tuple[int, str] | None:
    hits = [(text.find(f"</{n}>"), n) for n in names]
    hits = [h for h in hits if h[0] >= 0]
    return min(hits) if hits else None


def _unclosed(text: str, names: Sequence[str]) -> str | None:
    opened = [(text.rfind(f"<{n}>"), n) for n in names]
    opened = [o for o in opened if o[0] >= 0]
    return f"unclosed <{max(opened)[1]}>" if opened else None


def encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates, e.g. from a tool that decoded bytes with
    ``surrogateescape``) replaced by "?": the tokenizer refuses such strings, and a tool result must never stop
    a rollout."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _escaped(text: str) -> str:
    return encodable(text).rstrip("\n").replace(RESULT_CLOSE, "</ result>").replace(RESULT_OPEN, "< result>")


def format_result(text: str) -> str:
    """The context text appended after a tool call; trailing newlines dropped, result tags escaped."""
    return f"\n{RESULT_OPEN}\n{_escaped(text)}\n{RESULT_CLOSE}\n"


def encode_result(tokenizer, text: str) -> list[int]:
    """Token ids of ``format_result(text)``: the frame as the tokenizer encodes it, the tool's text with
    special-token strings split into plain text; no BOS/EOS or other special token is added."""
    def enc(s: str, split: bool) -> list[int]:
        return list(tokenizer.encode(s, add_special_tokens=False, split_special_tokens=split))

    return enc(f"\n{RESULT_OPEN}\n", False) + enc(_escaped(text), True) + enc(f"\n{RESULT_CLOSE}\n", False)
