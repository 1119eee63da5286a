"""Build the embedded demo agent (assets/demo-agent) reproducibly on CPU.

1. A byte-level BPE tokenizer (``tokenizers``) trained on the embedded tasks' text, with the chat markers
   (<|im_start|>, <|im_end|>, <|endoftext|>) as special tokens, the tool tags (<python>, </python>, <search>,
   </search>, <result>, </result>, <answer>, </answer>) as single added tokens, and a Qwen-style chat template.
2. A small ``Qwen2ForCausalLM`` (about 1.5M parameters, tied embeddings).
3. A supervised warm start on demonstrations of the tasks' ``sft`` split ONLY (disjoint from the ``train``
   prompts RL uses and the ``test`` questions evaluation uses; see ``arpo/envs/tasks.py``), built by running
   the REAL tools (the python sandbox and the kbqa search index), with loss on the agent's own tokens only.
   The demonstrator is imperfect on purpose, so that RL has something to learn that transfers to unseen
   questions — *when* to use the tools:
   - arith: a fraction ``--direct-frac`` of demonstrations answer at once, without ``<python>`` (the
     demonstrator knew the answer; the small model cannot compute it and guesses wrong on new questions);
   - kbqa: all demonstrations search the company; a fraction ``--skip-hop-frac`` then answer at once instead
     of searching the founder (again right only for the demonstrator). The decision comes right after a tool
     result, where ARPO's entropy rule branches.
   At temperature 1 the agent therefore skips the tool step about that often and is then nearly always wrong;
   the tool path is right most of the time. Starting pass@1 is moderate and pass@4 well above it.
4. An evaluation on the test splits with the real tools — greedy, and 4 samples at T=1 (pass@1 with its
   standard error, pass@4) — printed and written to ``eval.json``.

Run:  python scripts/make_demo_model.py --out assets/demo-agent      (about 10 minutes on 2 cores)
Same machine + same torch → the same weights (seeded; data and tokenizer are deterministic).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from arpo.config import RolloutConfig
from arpo.engines.hf import HFEngine
from arpo.envs.datasets import Prompt, build_prompt
from arpo.envs.prompts import system_prompt
from arpo.envs.tasks import kbqa_corpus, kbqa_index, load_task
from arpo.evaluate import evaluate as evaluate_prompts
from arpo.tools.parser import encode_result
from arpo.tools.python_sandbox import PythonSandbox
from arpo.tools.search import SearchIndex
from arpo.tools.toolbox import ToolBox

TOOLS = ("python", "search")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TAGS = ["<python>", "</python>", "<search>", "</search>", "<result>", "</result>", "<answer>", "</answer>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Qwen2's own normaliser/pre-tokeniser (digits one by one), so that ``AutoTokenizer`` — which loads a
    qwen2 model's tokenizer as ``Qwen2Tokenizer`` and rebuilds that pipeline — encodes exactly as trained."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_model(tok: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=160, intermediate_size=480, num_hidden_layers=4,
        num_attention_heads=5, num_key_value_heads=1, max_position_embeddings=2048, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen2ForCausalLM(cfg)


# ------------------------------------------------------------------------------------------------ demonstrations
def _segments(ex, tools, mix: dict[str, float]) -> list[tuple[str, str]]:
    """(text, kind) pieces of a transcript; kind "model" (trained), "result" (a tool result, computed by the real
    tool) or "hidden" (the demonstrator's own answer without a tool: in context, not trained). Whether this
    demonstration skips its (last) tool step is drawn from the example's uid and ``mix``, so it is the same on
    every run."""
    skip = random.Random(f"skip:{ex.uid}").random() < mix[ex.data_source]
    if ex.data_source == "arith":
        calls = [] if skip else [("python", ex.extra["code"])]
    else:
        calls = [("search", ex.extra["hops"][0])] + ([] if skip else [("search", ex.extra["hops"][1])])
    segs: list[tuple[str, str]] = []
    for name, query in calls:
        segs.append((f"<{name}>{query}</{name}>", "model"))
        segs.append((tools[name](query).text, "result"))
    answer = f"{ex.ground_truth[0]}</answer><|im_end|>"
    return segs + ([("<answer>", "model"), (answer, "hidden")] if skip else [("<answer>" + answer, "model")])


def _encode(tok, prompt_ids: list[int], segs) -> tuple[list[int], list[int]]:
    ids, mask = list(prompt_ids), [0] * len(prompt_ids)
    for text, kind in segs:
        piece = encode_result(tok, text) if kind == "result" else tok.encode(text, add_special_tokens=False)
        ids += piece
        mask += [int(kind == "model")] * len(piece)
    return ids, mask


def demonstrations(tok, examples, tools, mix: dict[str, float]) -> list[tuple[list[int], list[int]]]:
    """Token ids and loss masks of the examples' transcripts (``tools``: name -> callable, e.g. ``_Cached``)."""
    with ThreadPoolExecutor(8) as pool:
        segs = list(tqdm(pool.map(lambda e: _segments(e, tools, mix), examples), total=len(examples),
                         desc="demonstrations (running tools)"))
    return [_encode(tok, build_prompt(tok, e, TOOLS), s) for e, s in zip(examples, segs)]


class _Cached:
    """A tool whose results are remembered (both SFT phases show the same calls)."""

    def __init__(self, tool):
        self.tool, self.results = tool, {}

    def __call__(self, query: str):
        if query not in self.results:
            self.results[query] = self.tool(query)
        return self.results[query]


# ------------------------------------------------------------------------------------------------ training
def _batch(data, idx, pad_id):
    width = max(len(data[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id)
    labels = torch.full((len(idx), width), -100)
    for r, i in enumerate(idx):
        seq, mask = data[i]
        ids[r, : len(seq)] = torch.tensor(seq)
        labels[r, : len(seq)] = torch.where(torch.tensor(mask) == 1, torch.tensor(seq), -100)
    return ids, labels


def train(model, groups, steps: int, batch_size: int, lr: float, seed: int, pad_id: int) -> None:
    """AdamW, warm-up + cosine; each batch comes from one group (one task: similar lengths, little padding)."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    bar = tqdm(range(steps), desc="supervised warm start")
    for _ in bar:
        data = rng.choice(groups)
        ids, labels = _batch(data, rng.sample(range(len(data)), batch_size), pad_id)
        loss = model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(model, tok, tools, n: int) -> dict:
    """Greedy and 4 samples at T=1 on the first ``n`` test questions of each task, with the real tools."""
    report = {}
    cfg = RolloutConfig(mode="grpo", M=1, N=1, temperature=1.0, max_response_tokens=256, max_tool_calls=3)
    with ToolBox(tools, max_calls=cfg.max_tool_calls, pool_size=2) as box:
        for task in ("arith", "kbqa"):
            prompts = [Prompt(e, tuple(build_prompt(tok, e, TOOLS))) for e in load_task(task, "test")[:n]]
            t0 = time.time()
            greedy, records = evaluate_prompts(HFEngine(model, tok), box, tok, prompts, cfg, "auto")
            sampled, _ = evaluate_prompts(HFEngine(model, tok), box, tok, prompts, cfg, "auto", n=4, greedy=False)
            report[task] = {"greedy_accuracy": greedy["accuracy"], "greedy_tool_calls": greedy["tool_calls"],
                            "sampled_accuracy": sampled["accuracy"], "sampled_accuracy_se": sampled["accuracy_se"],
                            "pass@4": sampled["pass@4"], "sampled_tool_calls": sampled["tool_calls"],
                            "n": len(prompts), "seconds": round(time.time() - t0, 1),
                            "sample": records[0]["samples"][0]["text"]}
            r = report[task]
            print(f"{task}: greedy {r['greedy_accuracy']:.3f}; T=1 pass@1 {r['sampled_accuracy']:.3f} "
                  f"± {r['sampled_accuracy_se']:.3f}, pass@4 {r['pass@4']:.3f}, tool calls "
                  f"{r['sampled_tool_calls']:.2f} per sample ({len(prompts)} test questions)")
    return report


# ------------------------------------------------------------------------------------------------ main
def _tokenizer_texts(examples, corpus) -> list[str]:
    """Text for the BPE merges: the system prompt, the corpus, the SFT questions and their code."""
    texts = [system_prompt(TOOLS)] * 100 + [d["text"] for d in corpus] + [f"Doc {i} (Title: " for i in range(1, 9)] * 100
    texts += [e.question for e in examples] + [e.extra.get("code", "") for e in examples]
    return texts


def _save(model, tok, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="assets/demo-agent")
    ap.add_argument("--steps", type=int, default=3500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--direct-frac", type=float, default=0.5,
                    help="arith demonstrations that answer without calling python")
    ap.add_argument("--skip-hop-frac", type=float, default=0.5,
                    help="kbqa demonstrations that answer after the first search, skipping the second")
    ap.add_argument("--phase2-steps", type=int, default=400, help="steps of the fine-tune on the mixture")
    ap.add_argument("--phase2-lr", type=float, default=5e-4)
    ap.add_argument("--init", default=None, help="start phase 2 from this model (a --phase1-out directory)")
    ap.add_argument("--phase1-out", default=None, help="also save the phase-1 model here")
    ap.add_argument("--eval-n", type=int, default=200, help="test questions per task")
    ap.add_argument("--eval-only", action="store_true", help="only evaluate the model already in --out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    tools = {"python": PythonSandbox(timeout_s=5.0), "search": SearchIndex(kbqa_index(args.seed), top_k=3)}
    if args.eval_only:
        model, tok = _load(out)
    else:
        model, tok = _build_and_train(args, tools)
        _save(model, tok, out)
        print(f"saved to {out}")
    report = evaluate(model, tok, tools, args.eval_n)
    report["recipe"] = {k: v for k, v in vars(args).items() if k not in ("out", "eval_only", "init", "phase1_out")}
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _build_and_train(args, tools):
    """Phase 1: tool-using demonstrations only (the agent learns the protocol and to copy results; the copy
    skill needs the full 3,500 steps). Phase 2: a short fine-tune on the imperfect demonstrator's mixture (the
    agent learns to skip the tool step about as often as the mixture does; answers given without a tool are
    context, never trained, so the copy skill is not trained against)."""
    sft = {task: load_task(task, "sft", args.seed) for task in ("arith", "kbqa")}
    cached = {name: _Cached(tool) for name, tool in tools.items()}
    if args.init:
        model, tok = _load(Path(args.init))
        model.train()
    else:
        tok = build_tokenizer(_tokenizer_texts(sft["arith"] + sft["kbqa"], kbqa_corpus(args.seed)), args.vocab_size)
        model = build_model(tok, args.seed)
        print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tok)}")
        _phase(model, tok, sft, cached, {"arith": 0.0, "kbqa": 0.0}, args.steps, args.lr, args)
        if args.phase1_out:
            _save(model, tok, Path(args.phase1_out))
    mix = {"arith": args.direct_frac, "kbqa": args.skip_hop_frac}
    _phase(model, tok, sft, cached, mix, args.phase2_steps, args.phase2_lr, args)
    return model, tok


def _phase(model, tok, sft, tools, mix, steps: int, lr: float, args) -> None:
    groups = [demonstrations(tok, sft[task], tools, mix) for task in ("arith", "kbqa")]
    for name, data in zip(("arith", "kbqa"), groups):
        lengths = sorted(len(d[0]) for d in data)
        print(f"{name}: {len(data)} demonstrations (skip fraction {mix[name]}), tokens median "
              f"{lengths[len(lengths) // 2]}, max {lengths[-1]}")
    t0 = time.time()
    train(model, groups, steps, args.batch_size, lr, args.seed, tok.pad_token_id)
    print(f"trained {steps} steps at lr {lr} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
