"""The knowledge base of the embedded ``kbqa`` task, generated deterministically from a seed: a world of
companies (who founded them, when) and people (birth city and year, job), whose passages are the search
tool's default corpus (``kbqa_corpus``; ``kbqa_index`` builds its FTS5 index once in a cache directory, and
``make_toolbox`` searches it when no other index is configured).

Company names share words and people share first or last names, so a search returns distractors. The questions
about this world, and which companies each split asks about, are the task's (``arpo.envs.tasks``, a layer
above the tools).

Everything is a pure function of the seed: Python's ``random.Random`` seeded with a string is stable across
platforms and Python 3 versions.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "or", "en"]
_SUFFIXES = ["Labs", "Foods", "Motors", "Systems", "Books", "Games", "Studios", "Textiles"]
_JOBS = ["baker", "pilot", "chemist", "painter", "teacher", "farmer", "engineer", "doctor", "sailor", "writer",
         "architect", "musician"]
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


def kbqa_world(seed: int) -> list[dict]:
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
    for i, w in enumerate(kbqa_world(seed)):
        docs.append({"id": f"c{i}", "title": w["company"],
                     "text": f"{w['company']} was founded by {w['founder']} in {w['founded']}."})
        docs.append({"id": f"p{i}", "title": w["founder"],
                     "text": f"{w['founder']} was born in {w['city']} in {w['born']} and works as a {w['job']}."})
    return docs


def cache_dir() -> Path:
    """Where generated artefacts (the kbqa index) live: $ARPO_CACHE, else ~/.cache/arpo."""
    return Path(os.environ.get("ARPO_CACHE") or Path.home() / ".cache" / "arpo")


def kbqa_index(seed: int = 0, directory: Path | None = None) -> Path:
    """Path of the FTS5 index of ``kbqa_corpus(seed)``, built on first use (atomically) and reused after."""
    from .search import build_index

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
