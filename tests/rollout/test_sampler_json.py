"""The sampler with tools.format json: the same loop, tree, branching and packing; calls parsed as JSON, results
in the chat template's tool role (a scripted engine; the real engine and model run in tests/train/test_json_pipeline.py)."""
import math

import numpy as np
import pytest

from arpo.config import RolloutConfig
from arpo.engines.base import Result
from arpo.rollout.sampler import Sampler
from arpo.tools.base import BUILTIN_SPECS, ToolResult
from arpo.tools.formats import JsonFormat
from arpo.tools.toolbox import ToolBox
from arpo.tree import flatten_trees, pack_trees

CALL = '<tool_call>\n{"name": "python", "arguments": {"code": "print(1 + 1)"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tok(json_tool_script):
    return json_tool_script.make_tokenizer()


class JsonEngine:
    """Protocol-complete fake: the first turn writes ``first`` (a JSON call), a turn after a tool response writes
    ``after``; entropies ``h_first`` / ``h_after`` (nats). Records the stop strings it was given."""

    vocab_size = 1000

    def __init__(self, tok, h_first=0.0, h_after=0.0, first=CALL, after="<answer>2</answer>"):
        self.tok, self.h_first, self.h_after = tok, h_first, h_after
        self.first = tok.encode(first, add_special_tokens=False)
        self.after = tok.encode(after, add_special_tokens=False)
        self.response = tok.convert_tokens_to_ids("<tool_response>")
        self.seqs, self.released, self.stops = {}, set(), set()

    def generate(self, requests):
        out = []
        for r in requests:
            history = (self.seqs[r.parent] if r.parent is not None else ()) + tuple(r.tokens)
            answered = self.response in history
            turn = () if r.params.max_new_tokens == 0 else tuple(self.after if answered else self.first)
            turn = turn[: r.params.max_new_tokens]
            self.stops.add(r.params.stop)
            h = self.h_after if answered else self.h_first
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


class Python:
    spec, name = BUILTIN_SPECS["python"], "python"

    def __init__(self):
        self.codes = []

    def __call__(self, code):
        self.codes.append(code)
        return ToolResult("2\n")


def _sampler(tok, engine, tool, **cfg):
    cfg = RolloutConfig(**{"M": 5, "N": 1, "Z": 2, "k": 4, "alpha": 0.5, "beta": 1.0, "tau": 0.5,
                           "max_response_tokens": 200, **cfg})
    return Sampler(engine, ToolBox({"python": tool}, max_calls=3, format="json"), tok, cfg, seed=0)


def _prompt(tok):
    return tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tools=[BUILTIN_SPECS["python"].schema()],
                                   add_generation_prompt=True, tokenize=True)["input_ids"]


def test_json_rollout_branches_at_template_tool_results_and_packs(tok):
    python = Python()
    eng = JsonEngine(tok, h_first=0.0, h_after=5.0)  # entropy rises after the result: branch
    s = _sampler(tok, eng, python)
    prompt = _prompt(tok)
    [ro] = s.rollout([prompt])
    tree = ro.tree
    assert eng.stops == {("</tool_call>", "</answer>")}
    assert len(ro.leaves) == 5 and s.last_metrics["branches"] >= 1
    # a call before a fork runs once: one per path started from the prompt (the first and the fill-ups)
    assert python.codes == ["print(1 + 1)"] * ro.tool_executions
    assert ro.tool_executions == 1 + s.last_metrics["fills"] < 5
    results = [n for n in range(1, tree.num_nodes) if not tree.is_trainable(n)]
    expected = JsonFormat(tok, [BUILTIN_SPECS["python"]]).encode_result("2\n")
    assert results and all(list(tree.tokens(n)) == expected for n in results)
    assert tok.decode(expected) == "<|im_end|>\n<|im_start|>user\n<tool_response>\n2\n</tool_response><|im_end|>\n" \
                                   "<|im_start|>assistant\n"
    assert any(len(tree.children(n)) > 1 for n in results)  # the forks hang under the tool result
    for leaf in ro.leaves:
        assert leaf.finish == "answer" and leaf.tool_calls == 1
        assert leaf.text == CALL + tok.decode(expected) + "<answer>2</answer>"
    # the whole path is what the chat template renders for the conversation with that call and its result
    messages = [{"role": "user", "content": "1+1?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "python", "arguments": {"code": "print(1 + 1)"}}}]},
                {"role": "tool", "content": "2"}]
    rendered = tok.apply_chat_template(messages, tools=[BUILTIN_SPECS["python"].schema()],
                                       add_generation_prompt=True, tokenize=False)
    assert tok.decode(prompt) + ro.leaves[0].text == rendered + "<answer>2</answer>"
    # flat and packed batches are built as for the tag format: results masked, each shared token once
    tree_adv = [np.linspace(-1.0, 1.0, len(ro.leaves))]
    flat = flatten_trees([tree], tree_adv, credit="soft", pad_id=0)
    packed = pack_trees([tree], tree_adv, credit="soft", agg="token-mean")
    response_id = tok.convert_tokens_to_ids("<tool_response>")
    assert (flat.input_ids == response_id).sum() == 5 and not flat.loss_mask[flat.input_ids == response_id].any()
    trainable = sum(len(tree.tokens(n)) for n in range(1, tree.num_nodes) if tree.is_trainable(n))
    assert int(packed.loss_mask.sum()) == trainable < int(flat.loss_mask.sum())  # each shared token once
    assert set(eng.seqs) == eng.released


@pytest.mark.parametrize("first, error", [
    ('<tool_call>{"name": "python", "arguments": {"code": 1}}</tool_call>', 'argument "code" must be a string'),
    ('<tool_call>{"name": "shell", "arguments": {"cmd": "ls"}}</tool_call>', 'unknown tool "shell"'),
    ('<tool_call>{"name": "python", "arguments": {"code": "1"</tool_call>', "invalid JSON"),
])
def test_bad_calls_come_back_as_error_results(tok, first, error):
    python = Python()
    eng = JsonEngine(tok, first=first)
    s = _sampler(tok, eng, python, mode="grpo", M=2, N=2)
    [ro] = s.rollout([_prompt(tok)])
    assert python.codes == [] and ro.tool_executions == 0  # nothing ran, and nothing counted as a call
    for leaf in ro.leaves:
        assert f"<tool_response>\nError: invalid tool call: {error}" in leaf.text
        assert leaf.tool_calls == 0 and leaf.finish == "answer"


def test_tool_limit_applies_to_json_calls(tok):
    eng = JsonEngine(tok, after=CALL)  # calls for ever
    s = _sampler(tok, eng, Python(), mode="grpo", M=2, N=2, max_tool_calls=2, max_response_tokens=1000)
    [ro] = s.rollout([_prompt(tok)])
    assert all(leaf.finish == "tool_limit" and leaf.tool_calls == 2 for leaf in ro.leaves)
    assert math.isclose(s.last_metrics["tool_executions_per_traj"], 2.0)
