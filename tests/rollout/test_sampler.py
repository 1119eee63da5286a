"""The ARPO/GRPO samplers on a scripted engine (controlled entropies) and on the demo model."""
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from arpo.config import RolloutConfig
from arpo.engines.base import Result
from arpo.rollout.sampler import Sampler
from arpo.tools.base import ToolResult
from arpo.tools.toolbox import ToolBox

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(DEMO, local_files_only=True)


class ScriptedEngine:
    """Protocol-complete fake: the first turn calls the tool, the turn after a result answers.

    Entropies are set per turn: ``h_first`` for the first turn, ``h_after`` after a tool result (in nats;
    the sampler divides by ln V)."""

    vocab_size = 1000

    def __init__(self, tok, h_first, h_after, first="<python>1+1</python>", after="<answer>2</answer>"):
        self.tok, self.h_first, self.h_after = tok, h_first, h_after
        self.first, self.after = tok.encode(first), tok.encode(after)
        self.seqs, self.released, self.calls = {}, set(), 0

    def generate(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            history = (self.seqs[r.parent] if r.parent is not None else ()) + tuple(r.tokens)
            turn = () if r.params.max_new_tokens == 0 else tuple(
                self.after if self.tok.convert_tokens_to_ids("<result>") in history else self.first)
            turn = turn[: r.params.max_new_tokens]
            h = self.h_after if self.first[0] in history else self.h_first
            handle, fork = len(self.seqs), (len(self.seqs) + 1 if r.fork_point else None)
            self.seqs[handle] = history + turn
            if r.fork_point:
                self.seqs[fork] = history
            out.append(Result(handle, turn, (-0.1,) * len(turn), (h,) * len(turn), "stop", None,
                              len(r.tokens), len(history) - len(r.tokens), fork))
        return out

    def release(self, handles):
        self.released.update(handles)

    def tokens(self, handle):
        return self.seqs[handle]

    def update_weights(self, model):
        pass


def _echo(code):
    return ToolResult("2")


def _sampler(tok, engine, tool=_echo, **cfg):
    cfg = RolloutConfig(**{"M": 6, "N": 2, "k": 4, "max_response_tokens": 64, **cfg})
    return Sampler(engine, ToolBox({"python": tool, "search": tool}, max_calls=3), tok, cfg, seed=0)


@pytest.mark.parametrize("rule", ["threshold", "stochastic"])
@pytest.mark.parametrize("delta, branches", [(0.6, True), (-0.6, False)])
def test_entropy_rule_branches_iff_p_t_above_tau(tok, rule, delta, branches):
    # P_t = alpha + beta * (H_t - H_init) with alpha=0.5, beta=1, tau=0.5: branch iff H_t > H_init
    ln_v = math.log(ScriptedEngine.vocab_size)
    eng = ScriptedEngine(tok, h_first=0.2 * ln_v, h_after=(0.2 + delta) * ln_v)
    s = _sampler(tok, eng, rule=rule, alpha=0.5, beta=1.0 if rule == "threshold" else 2.0, tau=0.5)
    [ro] = s.rollout([tok.encode("q: 1+1?")])
    assert len(ro.leaves) == 6 and sorted(ro.tree.leaves()) == sorted(leaf.node for leaf in ro.leaves)
    # stochastic: P_t = 0.5 + 2*delta is clipped to exactly 1 or 0, so the outcome is certain too
    # each of the N=2 paths makes one tool call, so one decision each: 2 forks (Z=1) or none, fills make up M
    assert s.last_metrics["branches"] == (2 if branches else 0)
    assert s.last_metrics["fills"] == (2 if branches else 4)
    assert s.last_metrics["h_init_mean"] == pytest.approx(0.2)
    assert s.last_metrics["h_t_mean"] == pytest.approx(0.2 + delta)


def test_branches_fork_at_the_tool_result_and_results_are_masked(tok):
    eng = ScriptedEngine(tok, h_first=0.0, h_after=5.0)
    s = _sampler(tok, eng, M=5, N=1, Z=2, alpha=0.5, beta=1.0, tau=0.5)
    [ro] = s.rollout([tok.encode("q")])
    tree = ro.tree
    assert len(ro.leaves) == 5
    # one initial path: tool call → result → continuations; branches hang under the result node
    result_nodes = [n for n in range(1, tree.num_nodes) if not tree.is_trainable(n)]
    assert all(tok.decode(list(tree.tokens(n))).startswith("\n<result>") for n in result_nodes)
    assert all(tree.is_trainable(leaf.node) for leaf in ro.leaves)
    assert any(len(tree.children(n)) > 1 for n in result_nodes)
    assert all(leaf.text.endswith("<answer>2</answer>") and leaf.finish == "answer" for leaf in ro.leaves)
    assert set(eng.seqs) == eng.released  # every engine sequence released after the rollout


def test_grpo_never_branches_and_budget_is_exact(tok):
    eng = ScriptedEngine(tok, h_first=0.0, h_after=9.0)
    s = _sampler(tok, eng, mode="grpo", M=4, N=1)
    ros = s.rollout([tok.encode("a"), tok.encode("b c")])
    assert [len(r.leaves) for r in ros] == [4, 4] and s.last_metrics["branches"] == 0


def test_a_tool_result_and_its_continuation_take_one_engine_call(tok):
    """Prompt prefill, first turns, then each tool result goes with the turn after it: 3 calls, not 4."""
    eng = ScriptedEngine(tok, h_first=0.0, h_after=9.0)
    cfg = RolloutConfig(mode="grpo", M=3, N=1, max_response_tokens=64)
    s = Sampler(eng, ToolBox({"python": _echo}, max_calls=3), tok, cfg, seed=0, deterministic=True)
    [ro] = s.rollout([tok.encode("q")])
    assert all(leaf.finish == "answer" and leaf.tool_calls == 1 for leaf in ro.leaves)
    assert eng.calls == 3 and s.last_metrics["engine_calls"] == 3
    assert s.last_metrics["engine_rows_per_call"] == pytest.approx((1 + 3 + 3) / 3)


@pytest.mark.parametrize("wait_ms, calls", [(0, 4), (10_000, 3)])
def test_batch_wait_lets_pending_results_join_the_engine_call(tok, wait_ms, calls):
    """Two paths' tool calls: the first answers at once, the second only once the engine has run again (or
    after 1 s). Without a wait each continuation takes its own call; with rollout.batch_wait_ms both share one."""
    import threading

    eng, ran, order = ScriptedEngine(tok, 1.0, 1.0), threading.Event(), iter(range(2))
    generate = eng.generate

    def counting(requests):
        if eng.calls == 2:  # the call after the first tool result
            ran.set()
        return generate(requests)

    def tool(code):
        if next(order) == 1:
            ran.wait(1.0)
        return ToolResult("2")

    eng.generate = counting
    cfg = RolloutConfig(mode="grpo", M=2, N=1, max_response_tokens=64, batch_wait_ms=wait_ms)
    [ro] = Sampler(eng, ToolBox({"python": tool}, max_calls=3), tok, cfg, seed=0).rollout([tok.encode("q")])
    assert [leaf.finish for leaf in ro.leaves] == ["answer", "answer"] and eng.calls == calls


def test_fill_up_when_every_path_ends_early(tok):
    eng = ScriptedEngine(tok, 1.0, 1.0, first="<answer>7</answer>")  # no tool call: nothing to branch on
    s = _sampler(tok, eng, M=5, N=2)
    [ro] = s.rollout([tok.encode("q")])
    assert len(ro.leaves) == 5 and s.last_metrics["fills"] == 3
    assert len(ro.tree.children(0)) == 5  # five distinct samples from the prompt, no duplicated row


@pytest.mark.parametrize("tool_error", ["crash", "timeout"])
def test_a_failing_tool_does_not_stop_the_batch(tok, tool_error):
    def bad(code):
        if tool_error == "crash":
            raise RuntimeError("boom")
        return ToolResult("Error: timed out after 5.0 s", ok=False)

    eng = ScriptedEngine(tok, 1.0, 1.0)
    s = _sampler(tok, eng, tool=bad, M=3, N=3)
    [ro] = s.rollout([tok.encode("q")])
    assert len(ro.leaves) == 3
    assert all(("boom" if tool_error == "crash" else "timed out") in leaf.text for leaf in ro.leaves)


def test_length_limit_ends_paths(tok):
    eng = ScriptedEngine(tok, 1.0, 1.0)
    s = _sampler(tok, eng, M=2, N=2, k=1, max_response_tokens=3)
    [ro] = s.rollout([tok.encode("q")])
    assert len(ro.leaves) == 2 and all(leaf.finish in ("length", "stop") for leaf in ro.leaves)
    assert all(len(tok.encode(leaf.text)) <= 3 for leaf in ro.leaves)


def test_demo_model_rollouts_are_reproducible_and_share_prefixes(tok):
    import torch
    from transformers import AutoModelForCausalLM

    from arpo.config import ToolsConfig
    from arpo.engines.hf import HFEngine
    from arpo.envs.datasets import build_prompt
    from arpo.envs.tasks import load_task
    from arpo.tools.toolbox import make_toolbox

    model = AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True, dtype=torch.float32).eval()
    examples = [load_task("arith", "test")[0], load_task("kbqa", "test")[0]]
    prompts = [build_prompt(tok, e, ("python", "search")) for e in examples]
    cfg = RolloutConfig(M=4, N=2, k=8, max_response_tokens=160)
    runs = []
    with make_toolbox(ToolsConfig(pool_size=2), max_calls=cfg.max_tool_calls) as box:
        for _ in range(2):
            s = Sampler(HFEngine(model, tok), box, tok, cfg, seed=3)
            runs.append((s.rollout(prompts), s.last_metrics))
    (a, ma), (b, _) = runs
    assert [[leaf.text for leaf in r.leaves] for r in a] == [[leaf.text for leaf in r.leaves] for r in b]
    assert all(len(r.leaves) == 4 for r in a)
    assert ma["shared_prefix_cached"] > 0.9  # all but the re-fed last token of each continued sequence
    for r in a:  # the tree holds exactly the leaves' responses, tool results as context
        for leaf in r.leaves:
            path = r.tree.path(leaf.node)
            assert tok.decode([t for n in path[1:] for t in r.tree.tokens(n)]) == leaf.text
            assert all(r.tree.is_trainable(n) != tok.decode(list(r.tree.tokens(n))).startswith("\n<result>")
                       for n in path[1:])


def test_tool_call_limit_ends_paths(tok):
    eng = ScriptedEngine(tok, 1.0, 1.0)
    s = _sampler(tok, eng, M=3, N=3, max_tool_calls=0)
    [ro] = s.rollout([tok.encode("q")])
    assert [leaf.finish for leaf in ro.leaves] == ["tool_limit"] * 3
    assert all(leaf.tool_calls == 0 and leaf.text == "<python>1+1</python>" for leaf in ro.leaves)


def test_engine_failure_releases_every_sequence(tok):
    eng = ScriptedEngine(tok, 1.0, 1.0)
    generate, calls = eng.generate, []

    def failing(requests):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return generate(requests)

    eng.generate = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        _sampler(tok, eng, M=3, N=3).rollout([tok.encode("q")])
    assert eng.seqs and set(eng.seqs) == eng.released


def test_tool_completion_order_does_not_change_what_paths_sample(tok):
    """The same seed gives the same trajectories when tool results come back in a different order (here:
    random per-call delays, different in each run); only the order in which leaves finish may change."""
    import random
    import time as _time

    import torch
    from transformers import AutoModelForCausalLM

    from arpo.config import ToolsConfig
    from arpo.engines.hf import HFEngine
    from arpo.envs.datasets import build_prompt
    from arpo.envs.tasks import load_task
    from arpo.tools.toolbox import make_toolbox

    model = AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True, dtype=torch.float32).eval()
    prompts = [build_prompt(tok, e, ("python", "search")) for e in load_task("arith", "test")[:3]]
    cfg = RolloutConfig(M=4, N=2, k=8, max_response_tokens=160, temperature=1.5)  # hot: the tokens vary a lot
    texts = []
    for delays in (random.Random(1), random.Random(2)):
        with make_toolbox(ToolsConfig(enabled=["python"], pool_size=4), max_calls=cfg.max_tool_calls) as box:
            real = box.submit

            def slow(action, calls, real=real, delays=delays):
                _time.sleep(delays.uniform(0.0, 0.3))
                return real(action, calls)

            box.submit = slow
            rollouts = Sampler(HFEngine(model, tok), box, tok, cfg, seed=11).rollout(prompts)
        texts.append([[leaf.text for leaf in r.leaves] for r in rollouts])  # same order too
    assert texts[0] == texts[1]
    assert len({t for r in texts[0] for t in r}) > 3  # the runs really sampled different paths
