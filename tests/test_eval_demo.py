"""`arpo eval` (pass@k, tasks and dataset files, transcripts, bad input) and the `arpo demo` job."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arpo.cli import main
from arpo.config import load_config
from arpo.evaluate import pass_at_k

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, c, k", [(4, 1, 1), (4, 1, 4), (4, 0, 2), (5, 2, 2), (6, 3, 4), (3, 3, 1)])
def test_pass_at_k_matches_subset_enumeration(n, c, k):
    """Reference: the fraction of all k-subsets of the n samples that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(2, 1, 3)


class _Run:
    def __init__(self, capsys, *args):
        self.returncode = main(["eval", *args])
        captured = capsys.readouterr()
        self.stdout, self.stderr = captured.out, captured.err


@pytest.fixture
def _eval(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default --model is relative to the repository
    return lambda *args: _Run(capsys, *args)


def test_eval_embedded_tasks_greedy_and_sampled(tmp_path, _eval):
    r = _eval("--tasks", "arith,kbqa", "--limit", "3", "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "greedy" in r.stdout and "arith" in r.stdout and "kbqa" in r.stdout
    records = [json.loads(line) for line in (tmp_path / "g" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(len(rec["samples"]) == 1 for rec in records)
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["questions"] == 6 and 0.0 <= summary["accuracy"] <= 1.0 and summary["greedy"]
    want = sum(s["reward"] >= 1.0 for rec in records for s in rec["samples"]) / 6
    assert summary["accuracy"] == pytest.approx(want)

    r = _eval("--tasks", "arith", "--limit", "2", "--n", "3", "--temperature", "1.0", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["samples"] == 6 and "pass@2" in summary and "pass@3" in summary
    assert summary["pass@3"] >= summary["pass@2"] >= summary["accuracy"]


def test_eval_dataset_files(tmp_path, _eval):
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text(json.dumps({"question": "What is 17 + 25?", "answer": ["42", "forty-two"]}) + "\n"
                     + json.dumps({"question": "What is 3 * 7?", "answer": "21"}) + "\n")
    parquet = tmp_path / "arpo.parquet"
    pq.write_table(pa.Table.from_pylist([{
        "data_source": "gsm8k", "prompt": [{"role": "user", "content": "What is 9 + 10?"}], "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "19"}, "extra_info": {"index": 0}}]), parquet)
    r = _eval("--tasks", f"{jsonl},{parquet}", "--reward", "exact_match", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert [rec["ground_truth"] for rec in records] == [["42", "forty-two"], ["21"], ["19"]]


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nope"], "data.test[0]: must be an embedded task"),
    (["--model", "/nonexistent/model"], "'/nonexistent/model': no such directory"),
    (["--reward", "bogus"], "data.reward"),
    (["--n", "0"], "--n must be >= 1"),
])
def test_eval_bad_input(args, message, _eval):
    r = _eval(*args)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]


def _demo_cfg(tmp_path, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"train.output_dir={tmp_path / 'demo'}", "train.total_steps=1", "train.batch_size=2", "train.mini_batch_size=2",
        "rollout.M=4", "rollout.N=2", "train.eval_every=0", "data.test=[arith]", "data.train=[arith]", *extra])


def test_demo_job_writes_report(tmp_path, capsys):
    from arpo.cli.demo import run_demo

    cfg = _demo_cfg(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "old.txt").write_text("kept")
    out = run_demo(cfg, limit=3, greedy=True)
    moved = list(tmp_path.glob("demo.old-*"))
    assert len(moved) == 1 and (moved[0] / "old.txt").read_text() == "kept"  # nothing already written is lost
    report = out["report"].read_text()
    assert "| arith: accuracy (greedy) |" in report and "| all: pass@4 |" in report
    assert "| arith: tool executions / question (4 samples) |" in report and "| train reward |" in report
    assert "![reward](plots/reward.png)" in report and (tmp_path / "demo" / "plots" / "reward.png").exists()
    assert out["after"]["greedy"]["questions"] == 3 and out["after"]["sampled"]["samples"] == 12
    assert "1 steps" in report and out["stopped_at"] is None
    assert "| metric | before | after | change ± SE (paired) |" in capsys.readouterr().out


def test_demo_report_says_where_a_signal_stopped_training(tmp_path, monkeypatch):
    import os
    import signal

    from arpo.cli import demo
    from arpo.train.trainer import Trainer

    step = Trainer.step

    def signalled_step(self, i):  # SIGTERM arrives during the first step: training stops after it
        if i == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, i)

    monkeypatch.setattr(Trainer, "step", signalled_step)
    out = demo.run_demo(_demo_cfg(tmp_path, "train.total_steps=3"), limit=2)
    report = out["report"].read_text()
    assert out["stopped_at"] == 1 and out["after"] is None
    assert "stopped by a signal after step 1 of 3" in report and "3 steps" not in report
    assert (tmp_path / "demo" / "checkpoints" / "step_000001").is_dir()


def test_paired_change_and_its_standard_error():
    from arpo.cli.demo import paired_change

    def recs(correct):  # one record per question, samples with reward 1 or 0
        return [{"uid": f"q{i}", "data_source": "t", "samples": [{"reward": float(c)} for c in cs]}
                for i, cs in enumerate(correct)]

    before = recs([[1, 0], [0, 0], [1, 1]])
    after = recs([[1, 1], [1, 0], [1, 1]])
    mean, se = paired_change(before, after)
    d = [0.5, 0.5, 0.0]  # per-question changes; mean 1/3, sample std sqrt(1/12), se = that / sqrt(3)
    assert mean == pytest.approx(sum(d) / 3) and se == pytest.approx((1 / 12) ** 0.5 / 3 ** 0.5)
    with pytest.raises(ValueError, match="different questions"):
        paired_change(before, after[:2])


def _tiny(*extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        "train.total_steps=1", "train.batch_size=2", "train.mini_batch_size=2", "rollout.M=4", "rollout.N=2",
        "data.test=[arith]", "data.train=[arith]", "tools.enabled=[python]", *extra])


def test_compare_trains_every_arm_and_resumes(tmp_path, monkeypatch):
    from arpo.cli import compare

    cfg = _tiny()
    results = compare.run_compare(cfg, [0], tmp_path, control=True, samples=2, limit=2)
    assert set(results) == {"arpo", "arpo-stochastic", "grpo", "grpo-matched", "control"}
    for arm in results:
        run = tmp_path / f"{arm}-seed0"
        assert (run / "checkpoints" / "step_000001").is_dir()
        saved = load_config(run / "config.yaml")
        assert saved == compare.arm_config(cfg, arm, 0, tmp_path, saved.rollout.M)
        assert results[arm]["rollout_tokens"][0] > 0 and 0.0 <= results[arm]["accuracy"][0] <= 1.0
        assert results[arm]["tool_executions_per_traj"][0] <= results[arm]["tool_calls_on_path_per_traj"][0] + 1e-9
    assert load_config(tmp_path / "control-seed0" / "config.yaml").data.reward == "random"
    assert load_config(tmp_path / "arpo-stochastic-seed0" / "config.yaml").rollout.rule == "stochastic"
    assert results["grpo-matched"]["M"][0] == compare.matched_m(cfg, results)
    text = (tmp_path / "report.md").read_text()
    assert "| test accuracy, arith |" in text and "| arpo | arpo-stochastic | grpo | grpo-matched | control |" in text
    assert "| arpo − grpo |" in text and "| tool executions / trajectory |" in text
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["results"] == results and saved["stopped"] is None

    def no_training(*a, **k):
        raise AssertionError("finished runs must not be trained again")

    monkeypatch.setattr(compare, "Trainer", no_training)
    assert compare.run_compare(cfg, [0], tmp_path, control=True, samples=2, limit=2) == results
    with pytest.raises(ValueError, match="different config"):
        compare.run_compare(_tiny("train.lr=0.5"), [0], tmp_path, arms=("arpo",), samples=2, limit=2)


def test_compare_report_says_where_a_signal_stopped_it(tmp_path, monkeypatch):
    import os
    import signal

    from arpo.cli import compare
    from arpo.train.trainer import Trainer

    step = Trainer.step

    def signalled_step(self, i):
        if i == 0 and "grpo" in str(self.run_dir):
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, i)

    monkeypatch.setattr(Trainer, "step", signalled_step)
    results = compare.run_compare(_tiny("train.total_steps=2"), [0], tmp_path, arms=("arpo", "grpo"), samples=1,
                                  limit=1)
    assert set(results) == {"arpo"}
    text = (tmp_path / "report.md").read_text()
    assert "grpo-seed0 stopped by a signal after step 1 of 2" in text
    assert json.loads((tmp_path / "compare.json").read_text())["stopped"].startswith("grpo-seed0")


def test_random_p_and_arms_are_checked():
    from arpo.cli import compare

    with pytest.raises(ValueError, match="unknown arm"):
        compare.run_compare(_tiny(), [0], "/nonexistent", arms=("ppo",))
    with pytest.raises(ValueError, match="needs the arpo and grpo arms"):
        compare.run_compare(_tiny(), [0], "/nonexistent", arms=("grpo-matched",))


def test_mean_se():
    from arpo.cli.compare import mean_se

    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / 3**0.5))
    assert mean_se([0.5]) == (0.5, 0.0)
