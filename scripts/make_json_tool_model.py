"""A tiny Qwen2 that calls tools in the native JSON format (``tools.format: json``), for pipeline tests.

    python scripts/make_json_tool_model.py OUT_DIR [--steps 150] [--seed 0]

The tokenizer is the demo agent's (assets/demo-agent) with ``<tool_call>``, ``</tool_call>``, ``<tool_response>``
and ``</tool_response>`` added as single (non-special) tokens, as Qwen2.5's vocabulary has them, and a chat
template written here in Qwen2.5's format: the tools' JSON schemas inside ``<tools>…</tools>`` in the system turn,
calls as ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`` in assistant turns, tool messages as
``<tool_response>\\n…\\n</tool_response>`` inside a user turn. The model is a randomly initialised Qwen2 (2 layers,
hidden 64, ~0.2M parameters), then taught for ``--steps`` AdamW steps one fixed behaviour on ``--prompts``
arith prompts built exactly as the trainer builds them (``tools.enabled: [python]``, ``tools.format: json``):
call python with ``print(6 * 7)``, then answer ``<answer>42</answer>``. It learns nothing about arithmetic; it
is there so that rollouts make real JSON tool calls and training has something to move. Two prompts are learnt
in ~150 steps (~7-15 s on one core); the defaults (300 steps on 16 prompts, ~70 s on 2 busy cores) gave the exact
call on 16 of the 16 taught prompts and on 9 of 24 unseen ones at temperature 1 (the rest are broken calls,
which the parser turns into error results). Tests build one in a fixture (tests/conftest.py:
``json_tool_script``), taught on their own prompts. Nothing is downloaded; the output is about 1 MB.
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo-agent"
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
CALL_TEXT = '<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>'
ANSWER_TEXT = "<answer>42</answer>"

# Qwen2.5's tool-calling layout, written for this project (not a copy of Qwen's file).
CHAT_TEMPLATE = (
    "{%- set ns = namespace(first=0) -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages[0].role == 'system' -%}{{- messages[0].content + '\\n\\n' -}}{%- set ns.first = 1 -%}{%- endif -%}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'"
    " + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within '"
    " + '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, '"
    " + '\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- elif messages[0].role == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' -}}{%- set ns.first = 1 -%}"
    "{%- endif -%}"
    "{%- for message in messages[ns.first:] -%}"
    "{%- if message.role == 'assistant' and message.tool_calls -%}"
    "{{- '<|im_start|>assistant' -}}"
    "{%- if message.content -%}{{- '\\n' + message.content -}}{%- endif -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    "{%- set args = fn.arguments if fn.arguments is string else fn.arguments | tojson -%}"
    "{{- '\\n<tool_call>\\n{\\\"name\\\": \\\"' + fn.name + '\\\", \\\"arguments\\\": ' + args + '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' -}}"
    "{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def make_tokenizer(src: Path = DEMO):
    """The demo agent's tokenizer with the JSON tool-call tokens and the Qwen2.5-style template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    tok.add_tokens(TOOL_TOKENS)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_model(tok, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised Qwen2 for ``tok``'s vocabulary (embeddings tied to the LM head)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=10000.0,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return Qwen2ForCausalLM(cfg).float()


def arith_prompts(tok, n: int, split: str = "train") -> list[list[int]]:
    """The first ``n`` prompts of the embedded arith task's ``split``, built as ``arpo train`` builds them with
    ``tools.enabled: [python]`` and ``tools.format: json``."""
    from arpo.envs.datasets import build_prompt
    from arpo.envs.tasks import load_task
    from arpo.tools.base import BUILTIN_SPECS

    return [build_prompt(tok, ex, [BUILTIN_SPECS["python"]], tool_format="json")
            for ex in load_task("arith", split)[:n]]


def demonstrations(tok, prompts: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """(token ids, loss mask) of each prompt followed by the taught turns, laid out as the sampler lays out a
    rollout: prompt | call | result (JsonFormat) | answer + EOS; the loss mask is 1 on the call and the answer."""
    from arpo.tools.base import BUILTIN_SPECS
    from arpo.tools.formats import JsonFormat

    call = tok.encode(CALL_TEXT, add_special_tokens=False)
    result = JsonFormat(tok, [BUILTIN_SPECS["python"]]).encode_result("42\n")
    answer = tok.encode(ANSWER_TEXT, add_special_tokens=False) + [tok.eos_token_id]
    mask = [1] * len(call) + [0] * len(result) + [1] * len(answer)
    return [(list(p) + call + result + answer, [0] * len(p) + mask) for p in prompts]


def teach(model, tok, prompts: list[list[int]], steps: int, lr: float = 1e-2, batch: int = 8,
          seed: int = 0) -> list[float]:
    """``steps`` AdamW steps of ``batch`` rows of ``demonstrations(tok, prompts)`` (loss on the call and the
    answer only); returns the losses. One thread: these matrices are too small to gain from more, and on a
    shared CPU a second thread is a loss. A few prompts are learnt in ~100 steps; the behaviour carries over to
    unseen prompts only after many more steps and prompts (a 2-layer model fits its few prompts first)."""
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    demos = demonstrations(tok, prompts)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    try:
        for _ in range(steps):
            rows = [demos[i] for i in torch.randperm(len(demos), generator=gen)[:batch].tolist()]
            ids, attention, taught = _padded(rows, tok.pad_token_id)
            hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1][taught]
            loss = F.cross_entropy(model.lm_head(hidden), ids[:, 1:][taught])  # position t predicts token t + 1
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return losses


def _padded(rows, pad_id: int):
    """Right-padded ids [B, L], attention mask [B, L], the taught targets' mask [B, L - 1]."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([d + [pad_id] * (width - len(d)) for d, _ in rows])
    attention = torch.tensor([[1] * len(d) + [0] * (width - len(d)) for d, _ in rows])
    taught = torch.tensor([m[1:] + [0] * (width - len(m)) for _, m in rows], dtype=torch.bool)
    return ids, attention, taught


def make(out: str | Path, steps: int = 300, prompts: int = 16, seed: int = 0) -> Path:
    """Write the tokenizer and a model taught on the first ``prompts`` arith train prompts to ``out``."""
    out = Path(out)
    tok = make_tokenizer()
    model = make_model(tok, seed)
    losses = teach(model, tok, arith_prompts(tok, prompts), steps, seed=seed)
    print(f"taught {steps} steps on {prompts} prompts: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--prompts", type=int, default=16, help="arith train prompts taught")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make(args.out, args.steps, args.prompts, args.seed))


if __name__ == "__main__":
    main()
