"""The two embedded tasks, generated deterministically from a seed, with train/validation/test splits.

``arith``: arithmetic word problems of one to three steps on 2-4 digit numbers, meant to be solved by writing
the expression in ``<python>`` and copying the printed number into ``<answer>``.

``kbqa``: two-hop questions over a generated knowledge base ("In which city was the founder of Zorvex Labs
born?"). The base has one passage per company (who founded it, when) and one per person (birth city and year,
job); company names share words and people share first or last names, so a search returns distractors. A
question names only the company: answering needs one ``<search>`` for the company (to learn the founder) and a
second for the founder. The base is the search tool's (``arpo.tools.knowledge_base``, below the tasks): its
passages are the search corpus (``kbqa_corpus``; ``kbqa_index`` builds its FTS5 index once in a cache
directory), and this module asks questions about it.

Splits, and who sees which (no question is in two splits; a test checks it):
- ``sft``: the demo agent's supervised warm start (``scripts/make_demo_model.py``) and nothing else;
- ``train``: the RL training prompts of ``arpo train`` / ``arpo demo`` — never seen in SFT;
- ``validation``: free for tuning; ``test``: held-out evaluation (``arpo eval``, the demo's before/after).
kbqa splits ask about disjoint companies (sft 0-600, train 600-1200, validation 1200-1400, test 1400-1600 of
the generated world), so neither RL nor evaluation meets a company whose facts the agent memorised in SFT.
arith splits are independent random streams; a question already in an earlier split (order: sft, train,
validation, test) is drawn again.

Everything is a pure function of (task, split, seed): Python's ``random.Random`` seeded with a string is
stable across platforms and Python 3 versions.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable

from ..tools.knowledge_base import kbqa_corpus, kbqa_index, kbqa_world  # the first two: re-exported
from .example import Example

SPLITS = ("sft", "train", "validation", "test")
SPLIT_SIZES = {  # examples per split
    "arith": {"sft": 3000, "train": 4000, "validation": 200, "test": 200},
    "kbqa": {"sft": 1800, "train": 1800, "validation": 200, "test": 200},  # 600/600/200/200 companies, 3 q. each
}
_KBQA_COMPANIES = {"sft": (0, 600), "train": (600, 1200), "validation": (1200, 1400), "test": (1400, 1600)}


def load_task(name: str, split: str, seed: int = 0) -> list[Example]:
    """Examples of embedded task ``name`` (arith | kbqa) for ``split`` (train | validation | test)."""
    if name not in TASKS:
        raise ValueError(f"unknown embedded task {name!r}; embedded tasks: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of task {name!r}; splits: {', '.join(SPLITS)}")
    return TASKS[name](split, seed)


def _example(task: str, split: str, i: int, question: str, answer: str, **extra) -> Example:
    return Example(f"{task}:{split}:{i}", ({"role": "user", "content": question},), (answer,), task, extra)


# ---------------------------------------------------------------------------------------------------------
# arith: (question template, python expression template, ranges of a, b, c, d)
_ARITH = [
    ("What is {a} * {b} - {c}?", "{a} * {b} - {c}"),
    ("Compute ({a} + {b}) * {c}.", "({a} + {b}) * {c}"),
    ("A farmer has {a} crates with {b} eggs each. {c} eggs break. How many eggs are left?", "{a} * {b} - {c}"),
    ("A shop sells {a} pens at {b} dollars each and {c} books at {d} dollars each. "
     "How many dollars does it take in?", "{a} * {b} + {c} * {d}"),
    ("What is the remainder when {a}{b} is divided by {c}?", "{a}{b} % {c}"),
    ("A tank holds {a}{d} liters. It leaks {b} liters per hour for {c} hours. How many liters are left?",
     "{a}{d} - {b} * {c}"),
    ("What is {a} squared minus {b} times {c}?", "{a} ** 2 - {b} * {c}"),
    ("Each of {a} boxes holds {b} bags of {c} marbles. How many marbles are there?", "{a} * {b} * {c}"),
]


def _arith(split: str, seed: int) -> list[Example]:
    return list(_arith_splits(seed)[split])


@functools.lru_cache(maxsize=2)
def _arith_splits(seed: int) -> dict[str, tuple[Example, ...]]:
    """Every split, drawn in SPLITS order with one shared set of questions seen, so no question is in two."""
    seen: set[str] = set()
    return {split: tuple(_arith_stream(split, seed, seen)) for split in SPLITS}


def _arith_stream(split: str, seed: int, seen: set[str]) -> list[Example]:
    """The examples of ``split``, skipping questions in ``seen`` (those of earlier splits); adds its own."""
    rng = random.Random(f"arith:{split}:{seed}")
    out: list[Example] = []
    while len(out) < SPLIT_SIZES["arith"][split]:
        question, expr = rng.choice(_ARITH)
        value = -1
        while value < 0:  # word problems have non-negative answers
            nums = {k: str(rng.randint(12, 999)) for k in "abcd"}
            code = expr.format(**nums)
            value = eval(code, {"__builtins__": {}})  # our own template: integer literals and + - * % **
        text = question.format(**nums)
        if text not in seen:
            seen.add(text)
            out.append(_example("arith", split, len(out), text, str(value), code=f"print({code})"))
    return out


# ---------------------------------------------------------------------------------------------------------
# kbqa: questions about the knowledge base of arpo.tools.knowledge_base
_QUESTIONS = {
    "city": "In which city was the founder of {company} born?",
    "job": "What is the job of the founder of {company}?",
    "born": "In which year was the founder of {company} born?",
}


def _kbqa(split: str, seed: int) -> list[Example]:
    world = kbqa_world(seed)
    bounds = _KBQA_COMPANIES[split]
    rng = random.Random(f"kbqa:{split}:{seed}")
    pairs = [(w, kind) for w in world[slice(*bounds)] for kind in _QUESTIONS]
    rng.shuffle(pairs)
    return [
        _example("kbqa", split, i, _QUESTIONS[kind].format(company=w["company"]), str(w[kind]),
                 hops=[w["company"], w["founder"]])
        for i, (w, kind) in enumerate(pairs[: SPLIT_SIZES["kbqa"][split]])
    ]


TASKS: dict[str, Callable[[str, int], list[Example]]] = {"arith": _arith, "kbqa": _kbqa}
