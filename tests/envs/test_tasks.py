"""The embedded tasks: deterministic, disjoint splits, answers that follow from the question / the corpus."""
import ast
import re

import pytest

from arpo.envs.tasks import SPLIT_SIZES, SPLITS, kbqa_corpus, kbqa_index, load_task


@pytest.mark.parametrize("task", ["arith", "kbqa"])
def test_deterministic_and_seeded(task):
    a, b = load_task(task, "test", seed=0), load_task(task, "test", seed=0)
    assert a == b
    assert [e.question for e in load_task(task, "test", seed=1)] != [e.question for e in a]


@pytest.mark.parametrize("task", ["arith", "kbqa"])
def test_split_sizes_and_uids(task):
    for split in SPLITS:
        ex = load_task(task, split)
        assert len(ex) == SPLIT_SIZES[task][split] >= 200
        assert len({e.uid for e in ex}) == len(ex)
        assert all(e.uid.startswith(f"{task}:{split}:") and e.data_source == task for e in ex)
        assert all(e.messages[-1]["role"] == "user" and len(e.ground_truth) == 1 for e in ex)


def test_arith_answers_follow_from_the_question():
    for e in load_task("arith", "validation"):
        numbers = re.findall(r"\d+", e.question)
        code = e.extra["code"][len("print(") : -1]
        # the expression uses only the question's numbers (the two-number concatenations included)
        assert all(n in "".join(numbers) for n in re.findall(r"\d+", code.replace("** 2", ""))), e
        tree = ast.parse(code, mode="eval")
        assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.operator)) for n in ast.walk(tree))
        value = eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}})
        assert str(value) == e.ground_truth[0] and value >= 0


def test_kbqa_two_hops_through_the_corpus_and_disjoint_splits():
    docs = {d["title"]: d["text"] for d in kbqa_corpus()}
    companies = {}
    for split in SPLITS:
        for e in load_task("kbqa", split):
            company = re.search(r"founder of (.+?) born\?|founder of (.+?)\?", e.question)
            name = company.group(1) or company.group(2)
            assert name == e.extra["hops"][0]
            founder = re.fullmatch(rf"{name} was founded by (.+) in \d+\.", docs[name]).group(1)
            assert founder == e.extra["hops"][1]
            person = docs[founder]
            assert re.search(rf"\b{re.escape(e.ground_truth[0])}\b", person), (e, person)
            assert e.question.split()[0] in ("In", "What")
            companies.setdefault(name, set()).add(split)
    assert all(len(s) == 1 for s in companies.values())  # no company appears in two splits


def test_arith_splits_are_disjoint():
    questions = [{e.question for e in load_task("arith", split)} for split in SPLITS]
    for i in range(len(SPLITS)):
        for j in range(i + 1, len(SPLITS)):
            assert not questions[i] & questions[j], (SPLITS[i], SPLITS[j])


def test_the_sft_split_is_first_and_train_test_come_after():
    assert SPLITS[0] == "sft" and SPLITS.index("train") < SPLITS.index("test")


def test_kbqa_has_distractors():
    titles = [d["title"] for d in kbqa_corpus()]
    stems = [t.split()[0] for t in titles if t.split()[-1] in ("Labs", "Foods", "Motors", "Systems", "Books",
                                                                 "Games", "Studios", "Textiles")]
    assert len(set(stems)) < len(stems)  # company names share words, so a search returns look-alikes


def test_bad_task_or_split():
    with pytest.raises(ValueError, match="unknown embedded task 'nope'.*arith, kbqa"):
        load_task("nope", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'.*sft, train, validation, test"):
        load_task("arith", "dev")


def test_kbqa_index_is_built_once_and_answers_the_first_hop(tmp_path):
    from arpo.tools.search import SearchIndex

    path = kbqa_index(directory=tmp_path)
    stamp = path.stat().st_mtime_ns
    assert kbqa_index(directory=tmp_path) == path and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no stray corpus or temp files
    e = load_task("kbqa", "test")[0]
    top = SearchIndex(path, top_k=3).search(e.extra["hops"][0])[0]
    assert top.title == e.extra["hops"][0] and e.extra["hops"][1] in top.text
