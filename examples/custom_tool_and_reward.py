"""ARPO with your own tool and your own reward, from Python, on the embedded demo agent (CPU, a few minutes).

    python examples/custom_tool_and_reward.py --steps 20 --out runs/calculator

The tool is a calculator written here: it evaluates one arithmetic expression (``print(3 * 4)`` or ``3 * 4``)
by walking its syntax tree, with no interpreter process per call (the built-in python sandbox starts one per
call). The demo agent was fine-tuned to write ``<python>print(...)</python>``, so the calculator takes the name
``python`` (the built-in tool is disabled with ``tools.enabled: []``): the agent keeps its habit, the calls run
the user's code. Its docstring is the line the system prompt shows the model. The reward is the user's too:
1 for the exact number, 0.5 within 1 %, else 0, reading the row's own ``answer`` through ``example``.
The training rows are made here, in memory (a list of dicts: no dataset file needed).

Measured once (seed 0, 2-core CPU, ~10 min with other work running): the calculator's description changes the
system prompt the demo agent was fine-tuned with, and at first it almost never gets an answer right; on 200
questions drawn with another seed (none of them in the training rows), 4 samples each at temperature 1, pass@1
went from 0.015 ± 0.005 (the demo agent) to 0.665 ± 0.030 after 20 steps, with the calculator called on every
path. One seed and no control run: an illustration, not a study (`arpo compare` runs those).
"""
from __future__ import annotations

import argparse
import ast
import operator
import random
import re

import arpo

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod, ast.Div: operator.truediv, ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculator(code: str) -> str:
    """evaluates one arithmetic expression such as print(12 * 7 - 5) and returns its value."""
    tree = ast.parse(code.strip(), mode="eval").body
    if isinstance(tree, ast.Call) and getattr(tree.func, "id", None) == "print" and len(tree.args) == 1:
        tree = tree.args[0]
    return str(_value(tree))  # a SyntaxError or ValueError here is the error text the model sees



def _value(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        if abs(left) > 1e12 or abs(right) > 1e12:
            raise ValueError("numbers too large")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.operand))
    raise ValueError(f"only arithmetic on numbers is allowed, not {type(node).__name__}")


def partial_credit(response: str, ground_truth: tuple[str, ...], example) -> float:
    """1.0 for the exact answer, 0.5 within 1 % of it, else 0 (the last <answer>...</answer> counts)."""
    answers = re.findall(r"<answer>(.*?)</answer>", response, flags=re.DOTALL)
    try:
        value = float(answers[-1].replace(",", "").strip())
    except (IndexError, ValueError):
        return 0.0
    truth = float(example.extra["exact"])
    if value == truth:
        return 1.0
    return 0.5 if abs(value - truth) <= 0.01 * abs(truth) else 0.0


def rows(n: int, seed: int) -> list[dict]:
    """``n`` word problems as plain rows {question, answer, exact} (``exact``: what the reward compares)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, c = rng.randint(101, 999), rng.randint(101, 999), rng.randint(101, 999)
        out.append({"question": f"What is {a} * {b} - {c}?", "answer": str(a * b - c), "exact": a * b - c})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="runs/calculator")
    args = parser.parse_args(argv)
    config = {
        "data": {"max_prompt_tokens": 256, "test": []},
        "tools": {"enabled": []},  # the built-in sandbox off: `python` is the calculator below
        "rollout": {"M": 8, "N": 4, "max_response_tokens": 96, "token_budget": 8192},
        "train": {"total_steps": args.steps, "output_dir": args.out, "batch_size": 4, "mini_batch_size": 4,
                  "micro_batch_tokens": 4096, "lr": 2e-4, "update": "packed", "eval_every": 0, "save_every": 0},
    }
    trainer = arpo.Trainer(config, tools={"python": calculator}, reward=partial_credit, train_data=rows(256, seed=0))
    trainer.train()
    m = trainer.last_metrics
    print(f"step {m['step']}: reward {m['reward_mean']:.3f}, calculator calls per trajectory "
          f"{m['tool_executions_per_traj']:.2f}; checkpoint in {trainer.run_dir / 'checkpoints'}")
    return m


if __name__ == "__main__":
    main()
