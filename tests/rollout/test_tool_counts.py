"""Tool calls on the path vs tool calls executed: a call made before an ARPO fork is on the paths of several
leaves but runs once. Scripted engine with known branch points; a counting tool says what really ran."""
import math
import threading
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from arpo.config import RolloutConfig
from arpo.engines.base import Result
from arpo.rollout.sampler import Sampler
from arpo.tools.base import ToolResult
from arpo.tools.toolbox import ToolBox

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"
LN_V = math.log(1000)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(DEMO, local_files_only=True)


class TwoCallEngine:
    """Turn t of a path (t = tool results in its history) is a python call for t < 2, then the answer; a prompt
    containing "direct" answers at once. Normalised entropy per turn: 0.2, then ``h1`` after the first result,
    ``h2`` after the second (threshold rule with α=0.5, β=1, τ=0.5: a path branches iff H_t > H_init = 0.2)."""

    vocab_size = 1000

    def __init__(self, tok, h1: float, h2: float):
        self.tok, self.h = tok, (0.2, h1, h2)
        self.calls = [tok.encode("<python>1+1</python>"), tok.encode("<python>2+2</python>")]
        self.answer = tok.encode("<answer>4</answer>")
        self.result_id = tok.convert_tokens_to_ids("<result>")
        self.seqs, self.released = {}, set()

    def _turn(self, history: tuple) -> tuple[list[int], float]:
        done = history.count(self.result_id)
        if "direct" in self.tok.decode(list(history)) or done >= 2:
            return self.answer, self.h[min(done, 2)]
        return self.calls[done], self.h[done]

    def generate(self, requests):
        out = []
        for r in requests:
            history = (self.seqs[r.parent] if r.parent is not None else ()) + tuple(r.tokens)
            turn, h = ([], 0.0) if r.params.max_new_tokens == 0 else self._turn(history)
            turn = tuple(turn[: r.params.max_new_tokens])
            handle, fork = len(self.seqs), (len(self.seqs) + 1 if r.fork_point else None)
            self.seqs[handle] = history + turn
            if r.fork_point:
                self.seqs[fork] = history
            out.append(Result(handle, turn, (-0.1,) * len(turn), (h * LN_V,) * len(turn), "stop", None,
                              len(r.tokens), len(history) - len(r.tokens), fork))
        return out

    def release(self, handles):
        self.released.update(handles)

    def tokens(self, handle):
        return self.seqs[handle]

    def update_weights(self, model):
        pass


class CountingTool:
    def __init__(self):
        self.runs, self._lock = 0, threading.Lock()

    def __call__(self, code):
        with self._lock:
            self.runs += 1
        return ToolResult("4")


def _run(tok, prompts, h1=0.9, h2=0.0, **cfg):
    tool = CountingTool()
    box = ToolBox({"python": tool}, max_calls=3)
    cfg = RolloutConfig(**{"M": 4, "N": 2, "Z": 1, "k": 4, "alpha": 0.5, "beta": 1.0, "tau": 0.5,
                           "rule": "threshold", "max_response_tokens": 96, **cfg})
    sampler = Sampler(TwoCallEngine(tok, h1, h2), box, tok, cfg, seed=0)
    try:
        rollouts = sampler.rollout([tok.encode(p) for p in prompts])
    finally:
        box.close()
    return rollouts, sampler.last_metrics, tool, box


def _result_nodes(tree) -> int:
    """Tool results in the tree: one per executed call (a fork shares its parent's result node)."""
    return sum(not tree.is_trainable(n) for n in range(1, tree.num_nodes))


def test_arpo_branch_after_a_tool_call_executes_it_once(tok):
    # 2 initial paths; each branches (Z=1) after its first result: 4 leaves, 2 calls on every path (8 on paths),
    # executed: 2 first calls + 4 second calls (each branch makes its own) = 6; the direct prompt makes none
    rollouts, m, tool, box = _run(tok, ["q: two calls", "q: direct"])
    (ro, direct) = rollouts
    assert m["branches"] == 2 and m["fills"] == 2  # the direct prompt's 2 missing leaves are fill-ups
    assert [leaf.tool_calls for leaf in ro.leaves] == [2, 2, 2, 2]
    assert all(leaf.finish == "answer" for r in rollouts for leaf in r.leaves)
    assert (ro.tool_executions, direct.tool_executions) == (6, 0)
    assert ro.tool_executions == _result_nodes(ro.tree) == tool.runs == box.stats["python.calls"]
    leaves = [leaf for r in rollouts for leaf in r.leaves]
    assert m["tool_calls_on_path_per_traj"] == pytest.approx(sum(leaf.tool_calls for leaf in leaves) / 8) == 1.0
    assert m["tool_executions_per_traj"] == pytest.approx(6 / 8)
    assert m["tool_executions_per_prompt"] == pytest.approx(6 / 2)
    assert ro.tool_executions < sum(leaf.tool_calls for leaf in ro.leaves)
    assert "tool_calls_per_traj" not in m
    assert m["engine_calls"] >= 3 and 0.0 < m["tool_call_seconds_mean"] <= m["tool_call_seconds_max"] < 5.0


def test_arpo_branch_after_the_second_call(tok):
    # no branch after the first result, both paths branch after the second: 2 + 2 executed, 4 leaves x 2 calls
    [ro], m, tool, _ = _run(tok, ["q"], h1=0.0, h2=0.9)
    assert m["branches"] == 2 and [leaf.tool_calls for leaf in ro.leaves] == [2, 2, 2, 2]
    assert ro.tool_executions == _result_nodes(ro.tree) == tool.runs == 4
    assert m["tool_executions_per_traj"] == pytest.approx(1.0) and m["tool_calls_on_path_per_traj"] == 2.0


def test_a_call_past_the_limit_is_not_executed(tok):
    # max_tool_calls=1: the second call ends each path as tool_limit before it reaches the ToolBox
    [ro], m, tool, box = _run(tok, ["q"], max_tool_calls=1)
    assert [leaf.finish for leaf in ro.leaves] == ["tool_limit"] * 4
    assert ro.tool_executions == tool.runs == 2 and box.stats["rejected"] == 0
    assert m["tool_calls_on_path_per_traj"] == 1.0 and m["tool_executions_per_traj"] == pytest.approx(0.5)


def test_grpo_executed_equals_on_path(tok):
    rollouts, m, tool, _ = _run(tok, ["q: a", "q: direct"], mode="grpo")
    assert m["branches"] == 0 and [r.tool_executions for r in rollouts] == [8, 0]
    assert tool.runs == 8 and all(r.tool_executions == _result_nodes(r.tree) for r in rollouts)
    assert m["tool_executions_per_traj"] == pytest.approx(m["tool_calls_on_path_per_traj"]) == pytest.approx(1.0)
    assert m["tool_executions_per_prompt"] == pytest.approx(4.0)


def test_time_metrics_count_engine_calls_and_tool_runs():
    """engine_calls counts engine.generate calls; tool_call_seconds_* average the ToolResult.elapsed_s of the
    calls a tool ran (a rejected call, answered at once with elapsed 0, is not a run)."""
    from arpo.rollout.sampler import Rollout, _Stats

    stats = _Stats(tool_executions=[2], engine_calls=3, tool_seconds=[0.01, 0.03])
    m = stats.metrics([Rollout(tree=None, leaves=[], tool_executions=2)], seconds=1.0)
    assert m["engine_calls"] == 3.0
    assert m["tool_call_seconds_mean"] == pytest.approx(0.02) and m["tool_call_seconds_max"] == 0.03
    empty = _Stats().metrics([], seconds=1.0)
    assert math.isnan(empty["tool_call_seconds_mean"]) and math.isnan(empty["tool_call_seconds_max"])
