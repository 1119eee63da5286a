"""User tools (arpo.tools.custom, make_toolbox's tools.custom and extra): whatever the user's callable does, the
model gets a ToolResult, and the rollout goes on."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from arpo.config import ToolsConfig
from arpo.tools.base import ToolResult, ToolSpec
from arpo.tools.custom import CustomToolError, custom_tool
from arpo.tools.parser import Action
from arpo.tools.toolbox import make_toolbox


def upper(query: str) -> str:
    """returns the query in capitals."""
    return query.upper()


def test_text_and_tool_results_pass_through():
    tool = custom_tool("upper", upper)
    assert tool.spec == ToolSpec("upper", "returns the query in capitals.", "query")
    r = tool("abc")
    assert (r.text, r.ok, r.truncated) == ("ABC", True, False) and r.elapsed_s >= 0.0
    failing = custom_tool("f", lambda q: ToolResult("no such row", ok=False), description="looks a row up.")
    assert failing("x").text == "no such row" and failing("x").ok is False


def test_long_text_is_cut_to_the_byte_limit_at_a_character_boundary():
    tool = custom_tool("e", lambda q: "é" * 100, description="emits accents.", max_output_bytes=11)
    r = tool("x")
    assert r.truncated and r.text.startswith("é" * 5) and "é" * 6 not in r.text


@pytest.mark.parametrize(("fn", "message"), [
    (lambda q: 1 / 0, "Error: the t tool failed: ZeroDivisionError: division by zero"),
    (lambda q: None, "Error: the t tool returned NoneType, not text"),
    (lambda q: b"bytes", "Error: the t tool returned bytes, not text"),
    (lambda q: 42, "Error: the t tool returned int, not text"),
    (lambda q: ToolResult(b"x"), "Error: the t tool returned ToolResult, not text"),
    (lambda q: sys.exit(3), "Error: the t tool failed: SystemExit: 3"),
])
def test_failures_become_error_results(fn, message):
    r = custom_tool("t", fn, description="misbehaves.")("q")
    assert r.text == message and r.ok is False


def test_a_hung_tool_times_out_and_the_caller_goes_on():
    release = threading.Event()

    def hangs(query):
        release.wait(30)
        return "late"

    tool = custom_tool("slow", hangs, description="hangs.", timeout_s=0.2)
    start = time.perf_counter()
    r = tool("q")
    assert time.perf_counter() - start < 5.0
    assert (r.text, r.ok) == ("Error: the slow tool timed out after 0.2 s", False)
    assert tool.abandoned == 1
    release.set()


def test_description_and_argument_from_attributes_and_overrides():
    def lookup(q):
        return q

    lookup.description = "looks a word up in a table."
    lookup.argument = "word"
    assert custom_tool("lookup", lookup).spec == ToolSpec("lookup", "looks a word up in a table.", "word")
    assert custom_tool("lookup", lookup, description="other.", argument="key").spec.argument == "key"
    del lookup.argument
    assert custom_tool("lookup", lookup).spec.argument == "q"  # the parameter's name


@pytest.mark.parametrize(("name", "fn", "kwargs", "message"), [
    ("t", lambda q: q, {}, r"tool 't': no description; give <lambda> a docstring"),
    ("t", "not callable", {}, r"tool 't': expected a callable"),
    ("bad name", upper, {}, r"tool name 'bad name': must be an identifier"),
    ("answer", upper, {}, r"tool name 'answer' is reserved"),
    ("t", upper, {"timeout_s": 0}, r"tool 't': timeout_s must be a positive finite number"),
    ("t", upper, {"argument": "two words"}, r"tool argument 'two words': must be an identifier"),
])
def test_unusable_tools_are_named(name, fn, kwargs, message):
    with pytest.raises(CustomToolError, match=message):
        custom_tool(name, fn, **kwargs)


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_tools.py").write_text(
        "def make_upper():\n"
        "    def upper(query):\n"
        "        'returns the query in capitals.'\n"
        "        return query.upper()\n"
        "    return upper\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_tools"


def _echo(query):
    """repeats the query twice."""
    return query + query


def test_toolbox_with_config_and_python_tools(factory_module):
    cfg = ToolsConfig(enabled=["search"], custom={"upper": f"{factory_module}:make_upper"})
    with make_toolbox(cfg, 3, extra={"echo": _echo}) as box:
        assert box.names == ("search", "upper", "echo")
        assert [s.name for s in box.specs] == ["search", "upper", "echo"]
        assert box.specs[1] == ToolSpec("upper", "returns the query in capitals.", "query")
        assert box.run(Action("tool", "upper", "abc"), 0).text == "ABC"
        assert box.run(Action("tool", "echo", "ab"), 0).text == "abab"
        assert box.run(Action("tool", "echo", "ab"), 3).ok is False  # the call limit holds for user tools
        assert box.stats["upper.calls"] == 1 and box.stats["echo.calls"] == 1


@pytest.mark.parametrize(("custom", "extra", "message"), [
    ({"upper": "my_tools:make_upper"}, {"upper": _echo}, r"tool 'upper' is given twice"),
    ({}, {"search": _echo}, r"tool 'search': a built-in tool of that name is enabled"),
    ({"x": "my_tools:nope"}, {}, r"tool factory 'my_tools:nope': module 'my_tools' has no attribute 'nope'"),
    ({"x": "no_such_module_x:f"}, {}, r"tool factory 'no_such_module_x:f': cannot import"),
    ({"x": "my_tools:NOT_CALLABLE"}, {}, r"tool factory 'my_tools:NOT_CALLABLE': my_tools\.NOT_CALLABLE is not callable \(it is a int\)"),
    ({}, {"t": lambda q: q}, r"tool 't': no description"),
])
def test_toolbox_refuses_unusable_user_tools(factory_module, custom, extra, message):
    with pytest.raises(CustomToolError, match=message):
        make_toolbox(ToolsConfig(enabled=["search"], custom=custom), 3, extra=extra)
