"""The two embedded tasks, generated deterministically from a seed, with train/validation/test splits.

``arith``: arithmetic word problems of one to three steps on 2-4 digit numbers, meant to be solved by writing
the expression in ``<python>`` and copying the printed number into ``<answer>``.

``kbqa``: two-hop questions over a generated knowledge base ("In which city was the founder of Zorvex Labs
born?"). The base has one passage per company (who founded it, when) and one per person (birth city and year,
job); company names share words and people share first or last names, so a search returns distractors. A
question names only the company: answering needs one ``<search>`` for the company (to learn the founder) and a
second for the founder. The passages are the search corpus (``kbqa_corpus``; ``kbqa_index`` builds its FTS5
index once in a cache directory).

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
import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

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
# kbqa
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "or", "en"]
_SUFFIXES = ["Labs", "Foods", "Motors", "Systems", "Books", "Games", "Studios", "Textiles"]
_JOBS = ["baker", "pilot", "chemist", "painter", "teacher", "farmer", "engineer", "doctor", "sailor", "writer",
         "architect", "musician"]
_QUESTIONS = {
    "city": "In which city was the founder of {company} born?",
    "job": "What is the job of the founder of {company}?",
    "born": "In which year was the founder of {company} born?",
}
_WORLD_COMPANIES = 1600


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).capitalize()


def _unique_names(rng: random.Random, count: int, syllables: tuple[int, int]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        n = _name(rng, rng.randint(*syllables))
        if n not in seen:
            seen.add(n)
            names.append(n)
    return names


def _world(seed: int) -> list[dict]:
    """[_WORLD_COMPANIES] records: company, founder, founded, city, born, job. Names are unique."""
    rng = random.Random(f"kbqa-world:{seed}")
    firsts, lasts = _unique_names(rng, 120, (2, 2)), _unique_names(rng, 200, (2, 3))
    cities = _unique_names(rng, 60, (2, 3))
    stems = _unique_names(rng, 500, (2, 2))
    people = rng.sample([f"{f} {s}" for f in firsts for s in lasts], _WORLD_COMPANIES)
    companies = rng.sample([f"{s} {x}" for s in stems for x in _SUFFIXES], _WORLD_COMPANIES)
    return [
        {"company": c, "founder": p, "founded": rng.randint(1950, 2020), "city": rng.choice(cities),
         "born": rng.randint(1900, 1990), "job": rng.choice(_JOBS)}
        for c, p in zip(companies, people)
    ]


def kbqa_corpus(seed: int = 0) -> list[dict]:
    """The search corpus of ``kbqa``: ``{"id", "title", "text"}`` passages, one per company and per person."""
    docs = []
    for i, w in enumerate(_world(seed)):
        docs.append({"id": f"c{i}", "title": w["company"],
                     "text": f"{w['company']} was founded by {w['founder']} in {w['founded']}."})
        docs.append({"id": f"p{i}", "title": w["founder"],
                     "text": f"{w['founder']} was born in {w['city']} in {w['born']} and works as a {w['job']}."})
    return docs


def _kbqa(split: str, seed: int) -> list[Example]:
    world = _world(seed)
    bounds = _KBQA_COMPANIES[split]
    rng = random.Random(f"kbqa:{split}:{seed}")
    pairs = [(w, kind) for w in world[slice(*bounds)] for kind in _QUESTIONS]
    rng.shuffle(pairs)
    return [
        _example("kbqa", split, i, _QUESTIONS[kind].format(company=w["company"]), str(w[kind]),
                 hops=[w["company"], w["founder"]])
        for i, (w, kind) in enumerate(pairs[: SPLIT_SIZES["kbqa"][split]])
    ]


def cache_dir() -> Path:
    """Where generated artefacts (the kbqa index) live: $ARPO_CACHE, else ~/.cache/arpo."""
    return Path(os.environ.get("ARPO_CACHE") or Path.home() / ".cache" / "arpo")


def kbqa_index(seed: int = 0, directory: Path | None = None) -> Path:
    """Path of the FTS5 index of ``kbqa_corpus(seed)``, built on first use (atomically) and reused after."""
    from ..tools.search import build_index

    docs = kbqa_corpus(seed)
    blob = "\n".join(json.dumps(d, sort_keys=True) for d in docs)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    directory = Path(directory or cache_dir())
    index = directory / f"kbqa-{seed}-{digest}.db"
    if not index.exists():
        directory.mkdir(parents=True, exist_ok=True)
        corpus = directory / f"kbqa-{seed}-{digest}.{os.getpid()}.jsonl"
        corpus.write_text(blob + "\n")
        try:
            build_index(corpus, index, progress=False)
        finally:
            corpus.unlink(missing_ok=True)
    return index


TASKS: dict[str, Callable[[str, int], list[Example]]] = {"arith": _arith, "kbqa": _kbqa}
