"""Dataset loaders (ARPO/verl parquet, JSONL), their error messages, and build_prompt with a tiny offline
chat tokenizer."""
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

from arpo.envs.datasets import DatasetError, build_prompt, load_dataset, load_jsonl, load_parquet
from arpo.envs.example import Example
from arpo.envs.prompts import system_prompt

SYSTEM = {"role": "system", "content": "Use tools."}
USER = {"role": "user", "content": "What is 2+2?"}


def arpo_row(**overrides):
    row = {
        "data_source": "math",
        "prompt": [SYSTEM, USER],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "4"},
        "extra_info": {"index": 0, "split": "train"},
    }
    row.update(overrides)
    return row


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# parquet


@pytest.mark.parametrize(
    ("ground_truth", "expected"),
    [
        ("4", ("4",)),  # verl gsm8k / ARPO-RL-Reasoning-10K
        (["4", "four"], ("4", "four")),  # verl README
        ({"target": ["Paris", "City of Paris"]}, ("Paris", "City of Paris")),  # Search-R1 nq / hotpotqa
        ({"target": "Paris"}, ("Paris",)),
        (4, ("4",)),  # an integer column
    ],
)
def test_parquet_ground_truth_layouts(tmp_path, ground_truth, expected):
    row = arpo_row(reward_model={"style": "rule", "ground_truth": ground_truth})
    path = write_parquet(tmp_path / "train.parquet", [row])
    (example,) = load_parquet(path)
    assert example.ground_truth == expected


def test_parquet_fields(tmp_path):
    rows = [arpo_row(), arpo_row(prompt=[USER], data_source="nq", extra_info=None)]
    examples = load_parquet(write_parquet(tmp_path / "d.parquet", rows))
    assert examples[0] == Example(
        uid="d.parquet:0",
        messages=(SYSTEM, USER),
        ground_truth=("4",),
        data_source="math",
        extra={"index": 0, "split": "train"},
    )
    assert examples[1].uid == "d.parquet:1"
    assert examples[1].messages == (USER,)
    assert examples[1].data_source == "nq"
    assert examples[1].extra == {}
    assert examples[1].question == "What is 2+2?"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"prompt": None}, "'prompt': missing or null"),
        ({"prompt": "What is 2+2?"}, "'prompt': expected a non-empty list"),
        ({"prompt": []}, "'prompt': expected a non-empty list"),
        ({"prompt": [{"content": "What is 2+2?", "role": None}]}, "'prompt[0].role': expected a string"),
        ({"prompt": [SYSTEM]}, "'prompt': has no message with role 'user'"),
        ({"reward_model": {"style": "rule"}}, "'reward_model.ground_truth': missing or null"),
        ({"reward_model": None}, "'reward_model': expected a dict"),
        ({"reward_model": {"ground_truth": 4.5}}, "'reward_model.ground_truth': expected a non-empty string"),
        ({"reward_model": {"ground_truth": []}}, "'reward_model.ground_truth': expected a non-empty string"),
        ({"reward_model": {"ground_truth": ""}}, "'reward_model.ground_truth': expected a non-empty string"),
        ({"reward_model": {"ground_truth": {"target": None}}}, "'reward_model.ground_truth.target': "),
        ({"data_source": None}, "'data_source': missing or null"),
        ({"data_source": ""}, "'data_source': expected a non-empty string"),
        ({"extra_info": "x"}, "'extra_info': expected a dict or null"),
    ],
)
def test_parquet_bad_row(tmp_path, bad, field):
    path = tmp_path / "bad.parquet"
    try:  # the bad row after a good one (row 1), where pyarrow can give both rows one column type
        write_parquet(path, [arpo_row(), arpo_row(**bad)])
        row = 1
    except pa.ArrowException:
        write_parquet(path, [arpo_row(**bad)])
        row = 0
    with pytest.raises(DatasetError) as info:
        load_parquet(path)
    assert str(info.value).startswith(f"{path}: row {row}: field {field}")


def test_parquet_missing_prompt_column(tmp_path):
    row = arpo_row()
    del row["prompt"]
    path = write_parquet(tmp_path / "noprompt.parquet", [row])
    with pytest.raises(DatasetError, match=r"noprompt\.parquet: row 0: field 'prompt': missing or null"):
        load_parquet(path)


def test_parquet_unreadable(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_text("not parquet")
    with pytest.raises(DatasetError, match=r"junk\.parquet: cannot read parquet file"):
        load_parquet(path)
    with pytest.raises(DatasetError, match=r"absent\.parquet: cannot read parquet file"):
        load_parquet(tmp_path / "absent.parquet")


# ----------------------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "mix.jsonl",
        [
            {"question": "Capital of France?", "answer": "Paris", "id": 7},
            "",  # blank lines are skipped (line numbers still count them)
            {"question": "Hamlet's author?", "answer": ["Shakespeare", "W Shakespeare"], "data_source": "nq"},
            {"problem": "AIME: find n.", "answer": 204},
            arpo_row(),
            "   ",
        ],
    )
    a, b, c, d = load_jsonl(path)
    assert a == Example(
        uid="mix.jsonl:1",
        messages=({"role": "user", "content": "Capital of France?"},),
        ground_truth=("Paris",),
        data_source="mix",  # the file stem
        extra={"id": 7},
    )
    assert (b.uid, b.ground_truth, b.data_source) == ("mix.jsonl:3", ("Shakespeare", "W Shakespeare"), "nq")
    assert (c.uid, c.question, c.ground_truth) == ("mix.jsonl:4", "AIME: find n.", ("204",))
    assert (d.uid, d.messages, d.ground_truth) == ("mix.jsonl:5", (SYSTEM, USER), ("4",))
    assert d.extra == arpo_row()["extra_info"]  # ARPO rows keep extra_info; "ability" is dropped


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"question": "q", "answer": ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"answer": "a"}, "field 'question': missing (a row needs 'question' and 'answer', or ARPO"),
        ({"question": None, "answer": "a"}, "field 'question': missing or null"),
        ({"problem": "q", "answer": None}, "field 'answer': missing or null"),
        ({"question": "", "answer": "a"}, "field 'question': expected a non-empty string"),
        ({"question": 3, "answer": "a"}, "field 'question': expected a non-empty string"),
        ({"question": "q"}, "field 'answer': missing or null"),
        ({"question": "q", "answer": []}, "field 'answer': expected a non-empty string or a non-empty list"),
        ({"question": "q", "answer": ["a", 2]}, "field 'answer': expected"),
        ({"question": "q", "answer": True}, "field 'answer': expected"),
        ({"question": "q", "answer": "a", "data_source": 5}, "field 'data_source': expected a non-empty"),
        (arpo_row(prompt=[{"role": "user"}]), "field 'prompt[0].content': expected a string"),
        (arpo_row(prompt=["hi"]), "field 'prompt[0]': expected a message"),
        (arpo_row(reward_model={"ground_truth": {"answers": ["x"]}}), "'reward_model.ground_truth.target'"),
    ],
)
def test_jsonl_bad_row(tmp_path, line, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "ok"}, "", line])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}: line 3: ")
    assert field in str(info.value)


def test_empty_files_are_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"empty\.jsonl: no rows"):
        load_jsonl(write_jsonl(tmp_path / "empty.jsonl", ["", " "]))
    with pytest.raises(DatasetError, match=r"missing\.jsonl: cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_jsonl_line_separator_inside_a_string(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 raw; it must not split the row
    path = tmp_path / "u.jsonl"
    row = json.dumps({"question": "a\u2028b", "answer": "c"}, ensure_ascii=False)
    path.write_text(row + "\n", encoding="utf-8")
    (example,) = load_jsonl(path)
    assert example.question == "a\u2028b"


def test_jsonl_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    (example,) = load_jsonl(path)
    assert (example.uid, example.question, example.ground_truth) == ("bom.jsonl:1", "q", ("a",))


# ----------------------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_dispatches_by_suffix(tmp_path):
    jsonl = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    parquet = write_parquet(tmp_path / "qa.parquet", [arpo_row()])
    assert load_dataset(str(jsonl), "train") == load_jsonl(jsonl)
    assert load_dataset(str(parquet), "test", seed=3) == load_parquet(parquet)


@pytest.mark.parametrize("entry", ["data.csv", "data.json", "arith2"])
def test_load_dataset_unknown_entry(entry):
    message = rf"'{entry}': expected an embedded task \(arith, kbqa\)"
    message += r" or a file ending in \.parquet or \.jsonl"
    with pytest.raises(DatasetError, match=message):
        load_dataset(entry, "train")


# ----------------------------------------------------------------------------------------------------------
# build_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer (decodes any text exactly) with a Qwen-style chat template, built here."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["You solve the task step by step.", "What is 2+2? system user"], trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        chat_template=CHAT_TEMPLATE,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def qa_example(messages=(USER,)):
    return Example(uid="qa.jsonl:1", messages=tuple(messages), ground_truth=("4",), data_source="qa")


def test_build_prompt_adds_the_builtin_system_prompt(tokenizer):
    ids = build_prompt(tokenizer, qa_example(), tools=["python"])
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    expected = (
        f"<|im_start|>system\n{system_prompt(['python'])}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.decode(ids) == expected


def test_build_prompt_system_argument_and_own_system(tokenizer):
    text = tokenizer.decode(build_prompt(tokenizer, qa_example(), tools=[], system="Be brief."))
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?")
    # an example with its own system message keeps it, and gets no second one
    own = qa_example((SYSTEM, USER))
    text = tokenizer.decode(build_prompt(tokenizer, own, tools=["python"], system="Be brief."))
    assert text.startswith("<|im_start|>system\nUse tools.<|im_end|>\n<|im_start|>user\n")
    assert text.count("system") == 1 and text.endswith("<|im_start|>assistant\n")


def test_build_prompt_too_long(tokenizer):
    n = len(build_prompt(tokenizer, qa_example(), tools=[]))
    assert len(build_prompt(tokenizer, qa_example(), tools=[], max_prompt_tokens=n)) == n
    message = rf"example qa\.jsonl:1: prompt is {n} tokens, more than data\.max_prompt_tokens = {n - 1}"
    with pytest.raises(DatasetError, match=message):
        build_prompt(tokenizer, qa_example(), tools=[], max_prompt_tokens=n - 1)


def test_build_prompt_without_chat_template(tokenizer):
    plain = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    plain.name_or_path = "tiny-base-model"
    with pytest.raises(ValueError, match="tokenizer 'tiny-base-model' has no chat template"):
        build_prompt(plain, qa_example(), tools=[])


def test_build_prompt_json_format_renders_the_tool_schemas(json_tool_script, tmp_path):
    """tools.format json: the schemas go to the chat template as tools=[...]; the system prompt lists no tag
    syntax and still asks for <answer>; load_prompts passes the config's format."""
    from arpo.config import ARPOConfig, DataConfig, ToolsConfig
    from arpo.envs.datasets import load_prompts
    from arpo.tools.base import BUILTIN_SPECS, ToolSpec

    tok = json_tool_script.make_tokenizer()
    calc = ToolSpec("calc", "evaluates an arithmetic expression.", "expression")
    text = tok.decode(build_prompt(tok, qa_example(), tools=["python", calc], tool_format="json"))
    assert json.dumps(BUILTIN_SPECS["python"].schema()) in text and json.dumps(calc.schema()) in text
    assert "<python>" not in text and "<calc>" not in text and "<result>" not in text
    assert "<answer>...</answer>" in text and "<tool_call>" in text  # the template's own call syntax
    assert system_prompt(["python"], "json") in text
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    # an example's own system message: kept, and the template still renders the tools after it
    own = tok.decode(build_prompt(tok, qa_example((SYSTEM, USER)), tools=["python"], tool_format="json"))
    assert own.startswith("<|im_start|>system\nUse tools.\n\n# Tools") and '"name": "python"' in own
    # the tag format is unchanged by the template's tool support
    tags = tok.decode(build_prompt(tok, qa_example(), tools=["python"]))
    assert "<python>code</python>" in tags and "# Tools" not in tags
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "What is 2+2?", "answer": "4"}) + "\n")
    cfg = ARPOConfig(data=DataConfig(train=[str(tmp_path / "qa.jsonl")]),
                     tools=ToolsConfig(enabled=["python"], format="json"))
    [prompt] = load_prompts(cfg, tok, "train", no_bar=True)
    assert list(prompt.ids) == build_prompt(tok, qa_example(), tools=["python"], tool_format="json")


def test_json_system_prompt_lists_no_tag_syntax():
    text = system_prompt(["python", "search"], "json")
    assert "<python>" not in text and "<search>" not in text and "<result>" not in text
    assert text.endswith("Give the final answer as <answer>...</answer>.")
    assert system_prompt([], "json") == system_prompt([], "tags")  # no tools: nothing to call either way


# ----------------------------------------------------------------------------------------------------------
# in-memory rows (arpo.Trainer's train_data / test_data)


def test_rows_from_a_list_and_a_hugging_face_dataset_agree(tmp_path):
    from datasets import Dataset

    from arpo.envs.datasets import load_jsonl, load_rows, write_jsonl

    rows = [{"question": "1+1?", "answer": ["2"], "unit": "apples"},  # a Dataset column has one type
            {"question": "2+2?", "answer": ["4", "four"], "unit": "pears"}]
    plain = load_rows(rows, "mine")
    assert plain == load_rows(Dataset.from_list(rows), "mine")
    assert load_rows([{"question": "1+1?", "answer": 2}], "mine")[0].ground_truth == ("2",)
    assert [e.uid for e in plain] == ["mine:0", "mine:1"] and plain[1].ground_truth == ("4", "four")
    assert plain[0].extra == {"unit": "apples"} and plain[0].data_source == "mine"
    back = load_jsonl(write_jsonl(plain, tmp_path / "d" / "rows.jsonl"))
    assert [(e.messages, e.ground_truth, e.data_source, e.extra) for e in back] == \
        [(e.messages, e.ground_truth, e.data_source, e.extra) for e in plain]


@pytest.mark.parametrize(("rows", "message"), [
    ([], "mine: no rows"),
    ([{"question": "q"}], "mine: row 0: field 'answer': missing or null"),
    ([{"question": "q", "answer": "a"}, "text"], "mine: row 1: expected a JSON object"),
    ({"question": "q", "answer": "a"}, "mine: expected an iterable of rows"),
    ("rows.jsonl", "mine: expected an iterable of rows"),
    (42, "mine: expected an iterable of rows"),
])
def test_bad_rows_are_named(rows, message):
    from arpo.envs.datasets import load_rows

    with pytest.raises(DatasetError, match=re.escape(message)):
        load_rows(rows, "mine")


def test_dataset_entries_tells_names_from_rows(tmp_path):
    from arpo.envs.datasets import dataset_entries

    assert dataset_entries("arith") == ["arith"]
    assert dataset_entries(tmp_path / "a.jsonl") == [str(tmp_path / "a.jsonl")]
    assert dataset_entries(["arith", tmp_path / "a.jsonl"]) == ["arith", str(tmp_path / "a.jsonl")]
    assert dataset_entries([{"question": "q", "answer": "a"}]) is None
    assert dataset_entries([]) is None  # no names: load_rows says "no rows"
