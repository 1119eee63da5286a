"""ToolBox: failures and limits become result text; calls run concurrently in the pool."""
import threading

import pytest

from arpo.config import ToolsConfig
from arpo.tools.base import ToolResult
from arpo.tools.parser import parse_action
from arpo.tools.toolbox import ToolBox, make_toolbox

TOOLS = ("python", "search")


def echo(query: str) -> ToolResult:
    return ToolResult(f"echo {query}")


def broken(query: str) -> ToolResult:
    raise RuntimeError("disk on fire")


def test_call_result_and_stats():
    with ToolBox({"search": echo}, max_calls=2) as box:
        res = box.run(parse_action("<search>cats</search>", TOOLS), calls_made=0)
        assert (res.text, res.ok, res.truncated) == ("echo cats", True, False)
        assert res.elapsed_s > 0.0  # the toolbox times a run whose tool did not
        assert box.stats["search.calls"] == 1 and box.stats["search.failed"] == 0


def test_limit_invalid_unknown_and_crash_are_error_text():
    with ToolBox({"search": echo, "python": broken}, max_calls=1) as box:
        over = box.run(parse_action("<search>q</search>", TOOLS), calls_made=1)
        assert not over.ok and "tool-call limit of 1 reached" in over.text
        stray = box.run(parse_action("x</search>", TOOLS), calls_made=0)
        assert not stray.ok and stray.text == "Error: </search> without <search>"
        crash = box.run(parse_action("<python>1</python>", TOOLS), calls_made=0)
        assert not crash.ok and "python tool failed: RuntimeError: disk on fire" in crash.text
        assert box.stats["rejected"] == 2 and box.stats["python.failed"] == 1
    with ToolBox({"search": echo}, max_calls=3) as box:
        unknown = box.run(parse_action("<python>1</python>", TOOLS), calls_made=0)
        assert not unknown.ok and "unknown tool <python>; available: search" in unknown.text


def test_non_call_actions_are_a_caller_bug():
    with ToolBox({"search": echo}, max_calls=1) as box, pytest.raises(ValueError, match="'answer'"):
        box.submit(parse_action("<answer>1</answer>", TOOLS), 0)


@pytest.mark.parametrize("pool, expect_ok", [(4, True), (2, False)])
def test_calls_run_concurrently_in_the_pool(pool, expect_ok):
    barrier = threading.Barrier(4, timeout=2.0)  # passes only if 4 calls are in flight at once

    def rendezvous(query: str) -> ToolResult:
        barrier.wait()
        return ToolResult(query)

    with ToolBox({"search": rendezvous}, max_calls=1, pool_size=pool) as box:
        futures = [box.submit(parse_action(f"<search>{i}</search>", TOOLS), 0) for i in range(4)]
        results = [f.result() for f in futures]
    assert all(r.ok for r in results) == expect_ok
    if expect_ok:
        assert [r.text for r in results] == ["0", "1", "2", "3"]


def test_make_toolbox_python_only_runs_the_sandbox():
    cfg = ToolsConfig(enabled=["python"], python_timeout_s=3.0, pool_size=2)
    with make_toolbox(cfg, max_calls=2) as box:
        assert box.names == ("python",)
        res = box.run(parse_action("<python>print(6 * 7)</python>", TOOLS), 0)
        assert res.ok and res.text.strip() == "42"
        bad = box.run(parse_action("<python>1/0</python>", TOOLS), 1)
        assert not bad.ok and "ZeroDivisionError" in bad.text


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_calls >= 0"):
        ToolBox({}, max_calls=-1)


def test_make_toolbox_search_defaults_to_the_kbqa_index(tmp_path, monkeypatch):
    monkeypatch.setenv("ARPO_CACHE", str(tmp_path))
    cfg = ToolsConfig(enabled=["search"], search_top_k=2)
    with make_toolbox(cfg, max_calls=2) as box:
        assert box.names == ("search",)
        assert len(list(tmp_path.glob("kbqa-0-*.db"))) == 1  # built on first use, in ARPO_CACHE
        res = box.run(parse_action("<search>founded by</search>", TOOLS), 0)
        assert res.ok and res.text.count("Doc ") == 2 and "was founded by" in res.text
