"""Reward functions: answer extraction (tool results left out), SQuAD EM/F1, math-verify equivalence under
time and memory limits, format, and the registry. The math tests share the module's one worker pool (a
worker's ~0.5 s start is the slow part); a test that gets workers killed warms the pool up again after."""
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from arpo.config import REWARD_FNS
from arpo.envs import rewards
from arpo.envs.rewards import (
    RewardError,
    exact_match_reward,
    extract_answer,
    f1_reward,
    format_reward,
    get_reward_fn,
    math_reward,
    normalize_answer,
    strip_results,
    warm_up,
)


def ans(text: str) -> str:
    return f"<think>reasoning</think> <answer>{text}</answer>"


# ----------------------------------------------------------------------------------------------------------
# extract_answer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<answer>Paris</answer>", "Paris"),
        ("<answer>  Paris \n</answer>", "Paris"),  # stripped
        ("<answer></answer>", ""),  # present but empty: not None
        ("no tags at all", None),
        ("<answer>Paris", None),  # unclosed
        ("Paris</answer>", None),  # closing tag only
        ("<answer>Rome</answer> then <answer>Paris</answer>", "Paris"),  # the last one wins
        ("<answer>Rome</answer> then <answer>Paris", "Rome"),  # a trailing unclosed one does not hide it
        ("<answer>a <answer>b</answer> c</answer>", "b"),  # nested: the innermost complete pair
        ("<answer>x</answer> stray </answer>", "x"),  # a stray closing tag is ignored
        ("<answer>line1\nline2</answer>", "line1\nline2"),  # spans lines
        ("<ANSWER>x</ANSWER>", None),  # tags are case-sensitive
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # the engine's layout: an answer inside a retrieved document is not the model's answer
        ("<search>q</search>\n<result>\nDoc 1: <answer>Paris</answer>\n</result>\n", None),
        ("<search>q</search>\n<result>\n<answer>Paris</answer>\n</result>\n<answer>Rome</answer>", "Rome"),
        ("<answer>Rome</answer><search>q</search>\n<result>\n<answer>Paris</answer>\n</result>\n", "Rome"),
        ("<answer>Rome</answer><search>q</search>\n<result>\n<answer>Paris</answer>", "Rome"),  # unclosed
        ("<result>a</result><answer>x</answer><result>b</result>", "x"),
    ],
)
def test_extract_answer_ignores_tool_results(response, expected):
    assert extract_answer(response) == expected
    assert exact_match_reward(response, ["paris"]) == 0.0


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("a\n<result>\nx\n</result>\nb", "a\n\nb"),  # the block only
        ("a<result>x</result>b<result>y</result>c", "abc"),
        ("a<result>x</result>b<result>y <answer>z</answer>", "ab"),  # unclosed: runs to the end
        ("a</result>b", "a</result>b"),  # a stray closing tag stays
        ("no results", "no results"),
        # tools.format json: results in the template's tool role (<tool_response> inside a user turn)
        ("a<|im_end|>\n<|im_start|>user\n<tool_response>\n<answer>x</answer>\n</tool_response><|im_end|>\nb",
         "a<|im_end|>\n<|im_start|>user\n<|im_end|>\nb"),
        ("a<tool_response>x</result>y", "a"),  # blocks end at their own closing tag
        ("a<result>x</tool_response>y</result>b", "ab"),
    ],
)
def test_strip_results(response, expected):
    assert strip_results(response) == expected


def test_extract_answer_custom_tag():
    response = "<answer>no</answer><final>42</final>"
    assert extract_answer(response, tag="final") == "42"
    assert extract_answer(response) == "no"
    assert exact_match_reward(response, ["42"], answer_tag="final") == 1.0
    assert exact_match_reward(response, ["42"]) == 0.0


# ----------------------------------------------------------------------------------------------------------
# normalize_answer, exact_match, f1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear", "apple pear"),
        ("Theatre", "theatre"),  # "the" only as a word
        ("  U.S.A.  ", "usa"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        (ans("The Eiffel Tower."), ["eiffel tower"], 1.0),
        (ans("Eiffel"), ["Eiffel Tower"], 0.0),
        (ans("Paris"), ["Lyon", "paris", "Nice"], 1.0),  # any accepted answer
        (ans("Paris"), "Paris", 1.0),  # a bare string is one answer, not a list of characters
        ("Paris", ["Paris"], 0.0),  # no answer tag
        (ans("Paris"), [], 0.0),
        (ans("The final answer is \\[ \\boxed{Paris} \\]"), ["paris"], 1.0),  # ARPO's answer format
        (ans("\\boxed{New {York}} City"), ["new york"], 1.0),  # the box's content, braces balanced
        (ans("\\boxed{Paris"), ["paris"], 0.0),  # an unbalanced box is left as it is
    ],
)
def test_exact_match(response, truth, expected):
    assert exact_match_reward(response, truth) == expected


@pytest.mark.parametrize(
    ("response", "truth", "expected"),
    [
        # pred "the cat sat on the mat" -> [cat, sat, on, mat] (4 tokens); gold "a cat on a mat" ->
        # [cat, on, mat] (3); common {cat, on, mat} = 3; precision 3/4, recall 3/3; F1 = 2*.75*1/1.75 = 6/7.
        (ans("the cat sat on the mat"), ["a cat on a mat"], 6 / 7),
        # tokens count as a multiset: pred [new, new, york] vs gold [new, york]: common 2 (one "new");
        # precision 2/3, recall 1; F1 = 2 * (2/3) / (5/3) = 4/5.
        (ans("New new York"), ["New York"], 0.8),
        (ans("Barack Obama"), ["Obama"], 2 / 3),  # P 1/2, R 1 -> 2/3
        # max over answers: vs "Lyon" 0, vs "Paris France" P 1 R 1/2 -> 2/3, vs "Paris" 1.
        (ans("Paris"), ["Lyon", "Paris France", "Paris"], 1.0),
        (ans("Paris"), ["Lyon", "Paris France"], 2 / 3),
        (ans("London"), ["Paris"], 0.0),
        (ans("the"), ["a"], 1.0),  # both normalise to nothing: they agree (SQuAD v2)
        (ans("the"), ["Paris"], 0.0),
        ("London", ["London"], 0.0),  # no answer tag
        (ans("It is \\boxed{Barack Obama}"), ["Obama"], 2 / 3),
    ],
)
def test_f1(response, truth, expected):
    assert f1_reward(response, truth) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# format


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<answer>4</answer>", 1.0),
        ("<python>print(2+2)</python><result>4</result><answer>4</answer>", 1.0),
        ("<answer>4</answer> and then <search>more</search>", 1.0),  # a finished call after it is allowed
        ("<answer>4</answer> and then <python>print(", 0.0),  # an unclosed tool call after the answer
        ("<answer>4</answer> <search>q</search> <python>x", 0.0),
        ("<python>print(4)</python>", 0.0),  # no answer
        ("<answer>4", 0.0),  # unclosed answer
        ("<python>x <answer>4</answer>", 1.0),  # an unclosed call *before* the answer is not checked
        ("", 0.0),
        ("<search>q</search>\n<result>\n<answer>4</answer>\n</result>\n", 0.0),  # the answer is a tool's
        ("<answer>4</answer><search>q</search>\n<result>\n<python>x\n</result>\n", 1.0),  # a tool's text
        ("<answer>4</answer><result>\n<python>x", 1.0),  # in an unclosed result block
        # tools.format json: the same rules for <tool_call> and <tool_response>
        ('<answer>4</answer> <tool_call>\n{"name": "python", "arg', 0.0),
        ('<answer>4</answer><tool_call>{"name": "python"}</tool_call>', 1.0),
        ('<tool_call>{}</tool_call><tool_response>\n<answer>4</answer>\n</tool_response>', 0.0),
        ("<answer>4</answer><tool_response>\n<tool_call>x", 1.0),
    ],
)
def test_format(response, expected):
    assert format_reward(response, ["ignored"]) == expected


# ----------------------------------------------------------------------------------------------------------
# math


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("17", "17", 1.0),
        ("17.0", "17", 1.0),
        ("\\boxed{17}", "17", 1.0),
        ("$17$", "17", 1.0),
        ("17", "\\boxed{17}", 1.0),
        ("18", "17", 0.0),
        ("\\frac{1}{2}", "0.5", 1.0),
        ("\\frac12", "0.5", 1.0),  # bare LaTeX without $: read as math, not as text
        ("0.5", "\\frac{1}{2}", 1.0),
        ("1/2", "\\dfrac{1}{2}", 1.0),
        ("0.3333", "\\frac{1}{3}", 0.0),  # 6-digit float rounding: 0.3333 is not 1/3
        ("\\sqrt{2}", "2^{1/2}", 1.0),
        ("x = 3", "3", 1.0),
        ("1,000", "1000", 1.0),
        ("-3", "3", 0.0),
        ("The answer is 5", "5", 1.0),
        ("3\\pi", "3\\pi", 1.0),
        ("", "0", 0.0),
        ("Paris", "17", 0.0),
    ],
)
def test_math(pred, gold, expected):
    assert math_reward(ans(pred), [gold]) == expected


def test_math_many_answers_and_no_answer():
    assert math_reward(ans("0.25"), ["7", "\\frac{1}{4}"]) == 1.0
    assert math_reward(ans("0.25"), ["7", "8"]) == 0.0
    assert math_reward("the answer is 17", ["17"]) == 0.0  # no answer tag


def test_math_time_limit_from_a_worker_thread(caplog):
    # 9^(9^9) has ~370 million digits: sympy computes it exactly when comparing, for minutes.
    # Run from a non-main thread, where math-verify's own signal.alarm limit cannot work.
    warm_up()  # workers ready: their start-up is not timed below
    out = {}

    def score():
        start = time.perf_counter()
        out["reward"] = math_reward(ans("9^{9^{9}}"), ["1"], timeout_s=1.0)
        out["seconds"] = time.perf_counter() - start

    with caplog.at_level(logging.WARNING, logger="arpo.envs.rewards"):
        thread = threading.Thread(target=score)
        thread.start()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert out["reward"] == 0.0
    assert 1.0 <= out["seconds"] < 3.0
    assert "longer than 1 s" in caplog.text
    assert math_reward(ans("2"), ["2"]) == 1.0  # the killed worker was replaced
    warm_up()


def test_math_time_limit_covers_waiting_for_a_worker(caplog):
    # twice as many slow calls as workers: half time out running, half waiting for a free worker
    warm_up()
    seconds = [None] * (2 * rewards.MATH_WORKERS)

    def score(i):
        start = time.perf_counter()
        assert math_reward(ans("9^{9^{9}}"), ["1"], timeout_s=1.0) == 0.0
        seconds[i] = time.perf_counter() - start

    with caplog.at_level(logging.WARNING, logger="arpo.envs.rewards"):
        threads = [threading.Thread(target=score, args=(i,)) for i in range(len(seconds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert all(s is not None and s < 3.0 for s in seconds), seconds  # generous: a loaded 2-core machine
    assert caplog.text.count("took longer than 1 s") == rewards.MATH_WORKERS
    assert caplog.text.count("found no free worker within 1 s") == rewards.MATH_WORKERS
    warm_up()  # the replacements, started in the background
    assert math_reward(ans("0.5"), ["1/2"]) == 1.0


def test_math_worker_killed_while_idle(caplog):
    warm_up()
    victim = rewards._POOL._idle.queue[0]  # the worker the next call takes
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    with caplog.at_level(logging.WARNING, logger="arpo.envs.rewards"):
        assert math_reward(ans("0.5"), ["1/2"]) == 1.0  # retried on another worker
    assert f"worker died (exit code -{signal.SIGKILL})" in caplog.text
    warm_up()
    idle = list(rewards._POOL._idle.queue)
    assert len(idle) == rewards.MATH_WORKERS and victim not in idle


def test_math_worker_memory_cap():
    warm_up()
    with open(f"/proc/{rewards._POOL._idle.queue[0].proc.pid}/limits") as f:
        limits = f.read()
    assert f"Max address space         {rewards.MATH_MEMORY_BYTES}" in limits


@pytest.fixture
def small_pool():
    pools = []

    def make(**kwargs):
        pools.append(rewards._MathPool(1, **kwargs))
        return pools[-1]

    yield make
    for pool in pools:
        while not pool._idle.empty():
            pool._idle.get().kill()


def test_math_memory_hungry_input(small_pool):
    # 2^(2^34) is a 2 GiB integer: under a 300 MiB cap sympy's MemoryError ends the comparison in seconds
    # (uncapped it grows for minutes); the worker then retires and a fresh one replaces it
    pool = small_pool(memory_bytes=300 << 20)
    pool.warm_up()
    first = pool._idle.queue[0]
    start = time.perf_counter()
    assert pool.equal(("1",), "2^{2^{34}}", timeout_s=60.0) is False
    assert time.perf_counter() - start < 30.0
    pool.warm_up()
    assert pool._idle.queue[0] is not first and first.exitcode is not None
    assert pool.equal(("2",), "2", timeout_s=10.0) is True


def test_math_workers_that_cannot_start(small_pool, caplog):
    pool = small_pool(memory_bytes=1 << 20)  # 1 MiB: the worker fails to import math-verify
    with caplog.at_level(logging.ERROR, logger="arpo.envs.rewards"):
        with pytest.raises(RuntimeError, match="no math-verify worker could start"):
            pool.equal(("1",), "1", timeout_s=5.0)
    assert "worker did not start: exited with code 1" in caplog.text


def test_math_worker_stays_in_its_protocol(small_pool):
    # the worker's stdout is the protocol's channel only in a copy: whatever prints goes to stderr
    pool = small_pool()
    pool.warm_up()
    worker = pool._idle.queue[0]
    assert os.readlink(f"/proc/{worker.proc.pid}/fd/1") == os.readlink(f"/proc/{worker.proc.pid}/fd/2")
    assert pool.equal(("3",), "3", timeout_s=10.0) is True


def test_math_pool_restarts_when_no_worker_is_left(small_pool):
    # every worker gone and no replacement starting: the next call starts the pool again, outside its budget,
    # instead of waiting its budget for a worker that will never come
    pool = small_pool()
    pool.warm_up()
    worker = pool._idle.get()
    worker.kill()
    with pool._cond:
        pool._live -= 1  # as after a replacement that failed to start
    assert pool.equal(("4",), "4", timeout_s=5.0) is True


def test_math_concurrent_threads():
    results = [None] * 16

    def score(i):
        results[i] = math_reward(ans(str(i)), [str(i if i % 2 else i + 1)])

    threads = [threading.Thread(target=score, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [float(i % 2) for i in range(16)]


# A script whose top level is slow (heavy imports, then more) scores math under its main guard. With
# multiprocessing's spawn every worker re-ran that top level before serving, and the scores came out 0.
SLOW_SCRIPT = """\
import os, sys, time
with open(sys.argv[1], "a") as pids:  # every process that runs this top level leaves its pid
    pids.write(f"{os.getpid()}\\n")
import torch, transformers  # noqa: E401,F401
time.sleep(8)  # a slow main import, outside the main guard

from arpo.envs.rewards import get_reward_fn

if __name__ == "__main__":
    start = time.monotonic()
    print(get_reward_fn("math")("<answer>12</answer>", ["12"]))
    print(f"math reward call: {time.monotonic() - start:.2f} s", file=sys.stderr)
"""


def test_math_in_a_script_with_a_slow_main_module(tmp_path):
    if not all(importlib.util.find_spec(name) for name in ("torch", "transformers")):
        pytest.skip("needs torch and transformers")
    script, pids = tmp_path / "score.py", tmp_path / "pids"
    script.write_text(SLOW_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(pids)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1.0"], done.stderr
    assert len(pids.read_text().split()) == 1, "a worker ran the script's top level"
    seconds = float(done.stderr.rsplit("math reward call: ", 1)[1].split()[0])
    assert seconds < 60.0, done.stderr  # the pool's start (~1 s) with the call, on a loaded 2-core machine


# ----------------------------------------------------------------------------------------------------------
# registry


def test_builtin_names_cover_config():
    assert set(REWARD_FNS) == {"auto", "random", *rewards._BUILTIN}
    assert get_reward_fn("exact_match").__wrapped__ is exact_match_reward
    assert get_reward_fn("f1").__wrapped__ is f1_reward
    assert get_reward_fn("math").__wrapped__ is math_reward
    assert get_reward_fn("format").__wrapped__ is format_reward


@pytest.mark.parametrize(
    ("data_source", "expected"),
    [
        ("arith", math_reward),
        ("kbqa", exact_match_reward),
        ("openai/gsm8k", math_reward),
        ("aime24", math_reward),
        ("MATH500", math_reward),
        ("AI-MO/NuminaMath-CoT", math_reward),
        ("dapo_math_17k", math_reward),
        ("amc23", math_reward),
        ("hotpotqa", f1_reward),
        ("nq", f1_reward),
        ("bamboogle", f1_reward),
        ("kbqa_extended", f1_reward),  # kbqa is an exact name, not a substring rule
    ],
)
def test_auto(data_source, expected):
    assert get_reward_fn("auto", data_source).__wrapped__ is expected


def test_auto_needs_data_source():
    with pytest.raises(RewardError, match="data_source"):
        get_reward_fn("auto")


def test_unknown_name():
    with pytest.raises(RewardError, match=r"unknown reward 'f2'.*exact_match.*package\.module:function"):
        get_reward_fn("f2")


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length_reward(response, ground_truth):\n"
        "    return min(len(response) / 10, 1.0)\n"
        "def is_yes(response, ground_truth):\n"
        "    return response == 'yes'\n"
        "def too_big(response, ground_truth):\n"
        "    return 1.5\n"
        "def nan(response, ground_truth):\n"
        "    return float('nan')\n"
        "def text(response, ground_truth):\n"
        "    return '1'\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_custom_reward(custom_module):
    fn = get_reward_fn(f"{custom_module}:length_reward")
    assert fn("abcde", ["x"]) == 0.5
    assert fn.__name__ == "length_reward"
    yes = get_reward_fn(f"{custom_module}:is_yes")
    assert yes("yes", []) == 1.0 and type(yes("yes", [])) is float
    assert yes("no", []) == 0.0


@pytest.mark.parametrize(("attr", "shown"), [("too_big", "1.5"), ("nan", "nan"), ("text", "'1'")])
def test_custom_reward_bad_value(custom_module, attr, shown):
    fn = get_reward_fn(f"{custom_module}:{attr}")
    message = rf"reward 'my_rewards:{attr}' returned {shown} .*expected a float in \[0, 1\] or a bool"
    with pytest.raises(RewardError, match=message):
        fn("r", ["g"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_mod:fn", r"reward 'no_such_mod:fn': cannot import module 'no_such_mod'"),
        ("my_rewards:nope", r"reward 'my_rewards:nope': module 'my_rewards' has no attribute 'nope'"),
        ("my_rewards:NOT_CALLABLE", r"reward 'my_rewards:NOT_CALLABLE': my_rewards\.NOT_CALLABLE is not"),
    ],
)
def test_custom_reward_bad_path(custom_module, name, message):
    with pytest.raises(RewardError, match=message):
        get_reward_fn(name)


def test_workers_of_a_big_parent_do_not_retire(small_pool):
    """A worker's retire check measures its own peak memory, not the parent's: Linux carries the parent's peak
    RSS (here over 600 MiB) into ru_maxrss of every child, which made each worker of a trainer retire after one
    call, and each call wait for a fresh worker."""
    import numpy as np

    ballast = np.ones(600 << 17)  # 600 MiB of touched float64 pages in this (the parent) process
    pool = small_pool(memory_bytes=1 << 30)  # retire above 512 MiB
    pool.warm_up()
    first = pool._idle.queue[0]
    assert pool.equal(("2",), "2", timeout_s=10.0) is True
    assert pool._idle.queue[0] is first and first.exitcode is None
    del ballast


# ----------------------------------------------------------------------------------------------------------
# the random control reward


@pytest.mark.parametrize("p", [0.0, 0.3, 0.85, 1.0])
def test_random_reward_is_bernoulli_p_and_ignores_correctness(p):
    fn = get_reward_fn("random", "arith", random_p=p, seed=3)
    right = [fn(f"<answer>{i}</answer> {k}", [str(i)]) for i in range(2000) for k in range(2)]
    wrong = [fn(f"<answer>{i + 1}</answer> {k}", [str(i)]) for i in range(2000) for k in range(2)]
    assert set(right + wrong) <= {0.0, 1.0}
    for values in (right, wrong):  # 4000 draws each: 4 standard errors of a Bernoulli mean is <= 0.032
        assert abs(sum(values) / len(values) - p) <= 4 * (p * (1 - p) / len(values)) ** 0.5 + 1e-12


def test_random_reward_is_reproducible_and_seeded():
    a, b = get_reward_fn("random", random_p=0.5, seed=0), get_reward_fn("random", random_p=0.5, seed=0)
    c = get_reward_fn("random", random_p=0.5, seed=1)
    texts = [f"<answer>{i}</answer>" for i in range(200)]
    assert [a(t, ["1"]) for t in texts] == [b(t, ["1"]) for t in texts]  # same seed: same draws
    assert [a(t, ["1"]) for t in texts] != [c(t, ["1"]) for t in texts]  # another seed: other draws
    assert [a(t, ["1"]) for t in texts] != [a(t, ["2"]) for t in texts]  # the ground truth is in the key


def test_random_reward_rejects_a_bad_probability():
    with pytest.raises(RewardError, match="p must be in"):
        rewards.random_reward(1.5)


# ----------------------------------------------------------------------------------------------------------
# score_rollouts: the scoring of training and evaluation


def test_score_rollouts_scores_each_leaf_with_its_examples_reward():
    from types import SimpleNamespace

    from arpo.envs.example import Example

    def rollout(*texts):
        return SimpleNamespace(leaves=[SimpleNamespace(text=t) for t in texts])

    examples = [Example("a", (), ("42",), "kbqa"), Example("b", (), ("Paris",), "nq")]
    rollouts = [rollout("<answer>42</answer>", "<answer>41</answer>"), rollout("<answer>paris city</answer>")]
    assert rewards.score_rollouts("auto", examples, rollouts) == [[1.0, 0.0], [pytest.approx(2 / 3)]]
    assert rewards.score_rollouts("exact_match", examples, rollouts) == [[1.0, 0.0], [0.0]]
    fn = get_reward_fn("random", random_p=0.5, seed=7)
    want = [[fn(leaf.text, ex.ground_truth) for leaf in r.leaves] for ex, r in zip(examples, rollouts)]
    assert rewards.score_rollouts("random", examples, rollouts, random_p=0.5, seed=7) == want


# ----------------------------------------------------------------------------------------------------------
# rewards passed as Python callables (arpo.train(reward=...)): two or three positional parameters


def test_callable_reward_receives_the_example():
    from arpo.envs.example import Example

    seen = []

    def by_unit(response, ground_truth, example):
        seen.append(example)
        return float(example.extra["unit"] in response)

    ex = Example("u:1", ({"role": "user", "content": "q"},), ("3",), "units", {"unit": "km"})
    fn = get_reward_fn(by_unit)
    assert fn("3 km", ex.ground_truth, ex) == 1.0 and fn("3 m", ex.ground_truth, ex) == 0.0
    assert seen == [ex, ex]


def test_callable_reward_two_parameters_and_bool():
    fn = get_reward_fn(lambda response, ground_truth: response in ground_truth)
    assert fn("a", ("a",), None) == 1.0 and type(fn("a", ("a",), None)) is float


@pytest.mark.parametrize("bad", [lambda response: 1.0, lambda a, b, c, d: 1.0])
def test_callable_reward_wrong_signature_is_named(bad):
    with pytest.raises(RewardError, match=r"must accept \(response, ground_truth\) or \(response, ground_truth, "
                                          r"example\); its signature is"):
        get_reward_fn(bad)


def test_callable_reward_bad_value_is_named():
    def half_broken(response, ground_truth, example):
        return 2.0

    with pytest.raises(RewardError, match=r"half_broken' returned 2\.0"):
        get_reward_fn(half_broken)("r", ("g",), None)
