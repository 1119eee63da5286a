"""How the model calls tools (``tools.format``): one small object per format, so the sampler has one code path.

A format gives the engine's stop strings, parses a turn of generated text into an ``Action``, and encodes a tool
result into the token ids appended after the call (context, never trained on):

- ``TagFormat`` (``tags``, the default): ``<python>code</python>``, results as ``\\n<result>\\n…\\n</result>\\n``
  (``arpo.tools.parser``);
- ``JsonFormat`` (``json``): ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` as chat templates render
  from ``tools=[...]``, results in the template's tool role (``arpo.tools.json_calls``). Building one checks the
  tokenizer's chat template (it must render tools and a tool message): a bad template fails at start-up.

In both, the final answer is ``<answer>…</answer>``, and the tool's text is encoded with
``split_special_tokens=True`` (a printed ``<|im_end|>`` stays text) while the frame's tokens are encoded
normally; no BOS or other token is added.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import json_calls
from .base import ToolSpec
from .parser import Action, encode_result, encodable, parse_action, stop_strings

FORMATS = ("tags", "json")


class ToolFormat(Protocol):
    name: str
    stop_strings: tuple[str, ...]

    def parse(self, text: str) -> Action: ...

    def encode_result(self, text: str) -> list[int]: ...


class TagFormat:
    """``<name>argument</name>`` calls of the tools named ``tools``."""

    name = "tags"

    def __init__(self, tokenizer, tools: Sequence[str], answer_tag: str = "answer"):
        self.tokenizer, self.tools, self.answer_tag = tokenizer, tuple(tools), answer_tag
        self.stop_strings = tuple(stop_strings(self.tools, answer_tag))

    def parse(self, text: str) -> Action:
        return parse_action(text, self.tools, self.answer_tag)

    def encode_result(self, text: str) -> list[int]:
        return encode_result(self.tokenizer, text)


class JsonFormat:
    """JSON calls of the tools described by ``specs``; results framed by ``tokenizer``'s chat template."""

    name = "json"

    def __init__(self, tokenizer, specs: Sequence[ToolSpec], answer_tag: str = "answer"):
        self.tokenizer, self.specs, self.answer_tag = tokenizer, tuple(specs), answer_tag
        json_calls.check_renders_tools(tokenizer, self.specs)
        self.before, self.after = json_calls.result_frame(tokenizer)
        self._escapes = [(tag, tag.replace("</", "</ ", 1) if tag.startswith("</") else tag.replace("<", "< ", 1))
                         for tag in json_calls.frame_tags(self.before, self.after)]
        self.stop_strings = tuple(json_calls.stop_strings(answer_tag))

    def parse(self, text: str) -> Action:
        return json_calls.parse_json_action(text, self.specs, self.answer_tag)

    def result_text(self, text: str) -> str:
        """The tool's text as it goes inside the frame: trailing newlines dropped, the frame's tags escaped."""
        text = encodable(text).rstrip("\n")
        for tag, escaped in self._escapes:
            text = text.replace(tag, escaped)
        return text

    def format_result(self, text: str) -> str:
        """The context text appended after a call (what ``encode_result`` encodes)."""
        return self.before + self.result_text(text) + self.after

    def encode_result(self, text: str) -> list[int]:
        def enc(s: str, split: bool) -> list[int]:
            return list(self.tokenizer.encode(s, add_special_tokens=False, split_special_tokens=split))

        return enc(self.before, False) + enc(self.result_text(text), True) + enc(self.after, False)


