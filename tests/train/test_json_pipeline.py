"""tools.format json end to end: a tiny random-init Qwen2 with a Qwen2.5-style tool-calling chat template, taught
in a few seconds to call python in the JSON format (scripts/make_json_tool_model.py), trains with `arpo train`'s
Trainer, flat and packed: real HFEngine rollouts stop at </tool_call>, the sandbox runs the calls, the results go
back in the template's tool role, and the update moves the weights."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arpo.config import load_config
from arpo.envs.datasets import load_prompts
from arpo.tools.base import BUILTIN_SPECS
from arpo.train.trainer import Trainer
from arpo.train.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What is 6 times 7?", "Compute 6 * 7."]
_COUNTER = itertools.count()


def fake_python():
    """tools.custom factory: a stand-in for the sandbox that knows one program (fast, and no model-written code
    runs in the test process); described like the built-in python tool, so the prompts are the same."""
    def python(code: str) -> str:
        return "42\n" if code == "print(6 * 7)" else "Error: unsupported code"

    python.description, python.argument = BUILTIN_SPECS["python"].description, "code"
    return python


def alternating_reward(response: str, ground_truth) -> float:
    """0, 1, 0, 1, ... whatever the response: the taught model answers alike every time, so a reward of the
    answer (or data.reward=random, a hash of it) would leave every advantage 0 and the update nothing to do."""
    return float(next(_COUNTER) % 2)


def settings(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    # temperature 0.5: the rollouts check that the taught model calls the tool; at T = 1 one of its 8 samples
    # ran off (finish "length") on one machine and not on another (the taught model differs by float rounding)
    return [f"model.path={model}", f"data.train=[{data}]", f"data.test=[{data}]", "data.max_prompt_tokens=512",
            "data.reward=tests.train.test_json_pipeline:alternating_reward", "tools.enabled=[python]",
            "tools.format=json", "rollout.M=4", "rollout.N=2", "rollout.max_response_tokens=96",
            "rollout.token_budget=8192", "rollout.temperature=0.5", "train.batch_size=2", "train.mini_batch_size=2",
            "train.micro_batch_tokens=4096", "train.lr=1e-3", "train.schedule=constant", "train.kernel_backend=torch",
            "train.eval_every=0", "train.eval_limit=2", "train.save_every=1", "train.keep_checkpoints=1",
            "train.total_steps=1", f"train.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def json_model(tmp_path_factory, json_tool_script):
    """The tiny model, taught on this test's two prompts (as the trainer will build them), and its data file."""
    root = tmp_path_factory.mktemp("json_model")
    data = root / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "42"}) + "\n" for q in QUESTIONS))
    tok = json_tool_script.make_tokenizer()
    model = json_tool_script.make_model(tok)
    cfg = load_config(ROOT / "configs" / "demo.yaml", settings(root / "model", data, root / "unused"))
    prompts = [list(p.ids) for p in load_prompts(cfg, tok, "train", tools=[BUILTIN_SPECS["python"]], no_bar=True)]
    losses = json_tool_script.teach(model, tok, prompts, steps=150)
    assert losses[-1] < 0.05, losses[-10:]
    tok.save_pretrained(root / "model")
    model.save_pretrained(root / "model")
    return root / "model", data


@pytest.mark.parametrize("update, steps, tool", [("flat", 1, "custom"), ("packed", 2, "sandbox")])
def test_json_format_trains_end_to_end(json_model, tmp_path, update, steps, tool):
    model, data = json_model
    out = tmp_path / update
    evaluates = update == "packed"  # at steps 0 and 2 (evaluation is most of a run's time on a busy CPU)
    extra = [f"train.update={update}", f"train.total_steps={steps}", f"train.eval_every={2 if evaluates else 0}"]
    if tool == "custom":  # the user-tool path: described to the template from its ToolSpec, run by the ToolBox
        extra += ["tools.enabled=[]", "tools.custom={python: 'tests.train.test_json_pipeline:fake_python'}"]
    cfg = load_config(ROOT / "configs" / "demo.yaml", settings(model, data, out, *extra))
    assert Trainer(cfg, progress=False).train() == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(0 if evaluates else 1, steps + 1))  # step 0: evaluation
    for r in records[-steps:]:
        # the taught model calls python in JSON and the tool runs (ARPO's forks after a call share it)
        assert r["tool_calls_on_path_per_traj"] > 0.9 and r["tool_executions_per_traj"] > 0.2
        assert r["finish_answer"] > 0.9 and r["grad_norm"] > 0  # an update with something to do
    final = load_file(out / "checkpoints" / f"step_{steps:06d}" / "policy" / "model.safetensors")
    start = load_file(model / "model.safetensors")
    assert any(not torch.equal(start[k], final[k]) for k in start)
    if not evaluates:
        return
    assert records[0]["eval_tool_calls"] > 0.9 and records[-1]["eval_tool_calls"] > 0.9
    samples = [json.loads(line) for line in (out / "eval" / f"step_{steps:06d}.jsonl").read_text().splitlines()]
    assert samples[0]["samples"][0]["text"] == (
        '<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        "<answer>42</answer>")  # the engine stops at </answer>


def test_arpo_eval_uses_the_json_format(json_model, tmp_path):
    from arpo.cli.eval import eval_records

    model, data = json_model
    cfg = load_config(ROOT / "configs" / "demo.yaml", settings(model, data, tmp_path / "unused"))
    summary, records = eval_records(cfg, str(model), limit=2, quiet=True)
    assert summary["questions"] == 2 and summary["tool_calls"] == 1.0
    assert all("<tool_response>\n42\n</tool_response>" in s["text"] for r in records for s in r["samples"])


def test_a_template_without_tools_fails_at_start_up(tmp_path):
    from arpo.tools.json_calls import TemplateError

    cfg = load_config(ROOT / "configs" / "demo.yaml", ["tools.format=json", f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(TemplateError, match=r"tokenizer '.*demo-agent'.*ignores tools=\[\.\.\.\]"):
        Trainer(cfg, progress=False)  # the demo agent's template renders no tools: before any prompt or step
    assert not (tmp_path / "run").exists()
