"""Reward functions: answer extraction, SQuAD EM/F1, math-verify equivalence under a time limit, format,
and the registry. The math tests share the module's one worker pool (a worker's ~0.5 s start is the slow
part)."""
import logging
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
    assert math_reward(ans("1"), ["1"]) == 1.0  # a warm worker: its start-up is not timed below
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


# ----------------------------------------------------------------------------------------------------------
# registry


def test_builtin_names_cover_config():
    assert set(REWARD_FNS) == {"auto", *rewards._BUILTIN}
    assert get_reward_fn("exact_match") is exact_match_reward
    assert get_reward_fn("f1") is f1_reward
    assert get_reward_fn("math") is math_reward
    assert get_reward_fn("format") is format_reward


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
    assert get_reward_fn("auto", data_source) is expected


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
