"""``evaluate.summarize`` on hand-made records: the question-clustered standard error of the accuracy and the
two tool-call counts (on path, executed)."""
import math

import pytest

from arpo.evaluate import summarize


def _record(source: str, rewards: list[float], calls: list[int], executed: int) -> dict:
    samples = [{"text": "", "reward": r, "finish": "answer", "tool_calls": c, "response_tokens": 10}
               for r, c in zip(rewards, calls)]
    return {"uid": "u", "data_source": source, "question": "q", "ground_truth": ["x"],
            "tool_executions": executed, "samples": samples}


def test_accuracy_se_is_clustered_by_question_and_tool_counts():
    records = [_record("a", [1.0, 1.0, 0.0, 1.0], [1, 1, 2, 2], 4),  # a_q = 0.75
               _record("a", [0.0, 0.0, 0.0, 0.5], [0, 1, 1, 1], 2),  # a_q = 0 (0.5 is not full reward)
               _record("b", [1.0, 1.0, 1.0, 1.0], [2, 2, 2, 2], 5)]  # a_q = 1
    out = summarize(records, 1.0)
    # per-question accuracies 0.75, 0, 1: mean 7/12, sample variance ((1/6)^2 + (7/12)^2 + (5/12)^2) / 2
    var = ((0.75 - 7 / 12) ** 2 + (7 / 12) ** 2 + (5 / 12) ** 2) / 2
    assert out["accuracy"] == pytest.approx(7 / 12)
    assert out["accuracy_se"] == pytest.approx(math.sqrt(var / 3))
    assert out["accuracy_se"] == pytest.approx(0.3004626062886658)
    # source a: a_q = 0.75, 0: std (ddof 1) = 0.75 / sqrt(2), se = that / sqrt(2) = 0.375
    assert out["by_source"]["a"]["accuracy_se"] == pytest.approx(0.375)
    assert math.isnan(out["by_source"]["b"]["accuracy_se"])  # one question: no spread to estimate
    assert out["tool_calls"] == pytest.approx(17 / 12)  # on path, per sample
    assert out["tool_executions"] == pytest.approx(11 / 12)  # executed, per sample
    assert out["tool_executions_per_question"] == pytest.approx(11 / 3)
    assert out["by_source"]["a"]["tool_executions"] == pytest.approx(6 / 8)
    assert out["by_source"]["a"]["tool_executions_per_question"] == pytest.approx(3.0)


def test_summarize_of_no_records_is_nan_not_an_error():
    out = summarize([], 0.0)
    assert out["questions"] == 0 and out["samples"] == 0
    assert all(math.isnan(out[k]) for k in ("accuracy_se", "tool_executions", "tool_executions_per_question"))
