"""The embedded demo agent in assets/demo-agent: loads offline, renders its chat template, calls tools."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arpo.envs.datasets import build_prompt
from arpo.envs.tasks import kbqa_index, load_task
from arpo.tools.parser import encode_result, parse_action
from arpo.tools.search import SearchIndex

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-agent"
TOOLS = ("python", "search")
TAGS = ["<python>", "</python>", "<search>", "</search>", "<result>", "</result>", "<answer>", "</answer>"]


@pytest.fixture(scope="module")
def agent():
    tok = AutoTokenizer.from_pretrained(DEMO, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True).eval()
    return tok, model


def test_files_are_small_and_the_recipe_is_recorded():
    size = sum(p.stat().st_size for p in DEMO.iterdir())
    assert size <= 20 * 2**20
    report = json.loads((DEMO / "eval.json").read_text())
    assert set(report) >= {"arith", "kbqa", "recipe"}


def test_tool_tags_are_single_non_special_tokens(agent):
    tok, model = agent
    ids = tok.convert_tokens_to_ids(TAGS)
    assert tok.unk_token_id not in ids and len(set(ids)) == len(TAGS)
    assert tok.decode(ids, skip_special_tokens=True) == "".join(TAGS)  # tags survive special-token stripping
    assert model.config.model_type == "qwen2" and model.config.vocab_size >= len(tok)
    assert tok.bos_token is None and tok.eos_token == "<|im_end|>"


def test_auto_tokenizer_encodes_exactly_as_the_trained_tokenizer(agent):
    from tokenizers import Tokenizer

    tok, _ = agent  # AutoTokenizer rebuilds a qwen2 tokenizer's pipeline; it must match tokenizer.json's
    raw = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    texts = [e.question for t in ("arith", "kbqa") for e in load_task(t, "test")[:20]]
    texts.append("<python>print(12 * 3)</python>\n<result>\nDoc 1 (Title: Gödel): x</result><answer>36</answer>")
    for text in texts:
        assert tok.encode(text, add_special_tokens=False) == raw.encode(text, add_special_tokens=False).ids


def test_chat_template_renders_system_user_and_generation_prompt(agent):
    tok, _ = agent
    example = load_task("arith", "test")[0]
    text = tok.decode(build_prompt(tok, example, TOOLS))
    assert text.startswith("<|im_start|>system\nYou solve the task")
    assert f"<|im_start|>user\n{example.question}<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def _greedy_turn(model, tok, ids: list[int], max_new: int = 48) -> str:
    stops = tok.convert_tokens_to_ids(["</python>", "</search>", "</answer>", "<|im_end|>"])
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, len(ids):])


@pytest.mark.parametrize("task, tool", [("arith", "python"), ("kbqa", "search")])
def test_emits_a_well_formed_tool_call(agent, task, tool):
    tok, model = agent  # given the tool's opening tag, greedy completions on five test prompts are complete calls
    good = 0
    for example in load_task(task, "test")[:5]:
        ids = build_prompt(tok, example, TOOLS) + tok.convert_tokens_to_ids([f"<{tool}>"])
        act = parse_action(f"<{tool}>" + _greedy_turn(model, tok, ids), TOOLS)
        ok = act.kind == "tool" and act.name == tool and bool(act.content)
        if ok and task == "arith":
            compile(act.content, "<call>", "exec")  # the call is valid Python
        good += ok
    assert good >= 4


def _first_token_probs(model, tok, ids: list[int], tokens: list[str]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return logits.softmax(-1)[tok.convert_tokens_to_ids(tokens)]


def test_headroom_the_agent_is_unsure_whether_to_use_its_tools(agent):
    """The SFT mixture (scripts/make_demo_model.py) leaves RL a decision to learn on unseen questions: at T=1 the
    agent calls python on arith, or searches the founder on kbqa after the first result, only some of the
    time; the rest of the time it answers at once (and is then almost always wrong)."""
    tok, model = agent
    arith = [_first_token_probs(model, tok, build_prompt(tok, e, TOOLS), ["<python>", "<answer>"])
             for e in load_task("arith", "test")[:20]]
    p_tool = torch.stack(arith)[:, 0].mean().item()
    assert 0.15 <= p_tool <= 0.85 and torch.stack(arith).sum(1).min() > 0.9
    hops = []
    for e in load_task("kbqa", "test")[:20]:
        ids = build_prompt(tok, e, TOOLS) + tok.encode(f"<search>{e.extra['hops'][0]}</search>",
                                                      add_special_tokens=False)
        ids += encode_result(tok, SearchIndex(kbqa_index(), top_k=3)(e.extra["hops"][0]).text)
        hops.append(_first_token_probs(model, tok, ids, ["<search>", "<answer>"]))
    p_hop = torch.stack(hops)[:, 0].mean().item()
    assert 0.15 <= p_hop <= 0.85 and torch.stack(hops).sum(1).min() > 0.9


def test_continues_after_a_tool_result_with_an_answer(agent):
    tok, model = agent
    example = load_task("arith", "test")[2]
    ids = build_prompt(tok, example, TOOLS) + tok.encode(f"<python>{example.extra['code']}</python>",
                                                           add_special_tokens=False)
    ids += encode_result(tok, example.ground_truth[0])
    act = parse_action(_greedy_turn(model, tok, ids), TOOLS)
    assert act.kind == "answer" and act.content == example.ground_truth[0]
