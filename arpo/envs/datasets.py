"""Dataset files -> ``Example`` records, an example -> prompt token ids, and a run's tokenised prompts
(``load_prompts``: training and evaluation both load theirs here).

Accepted rows (a ``.parquet`` file holds ARPO/verl rows; a ``.jsonl`` file, UTF-8 with or without a byte-order
mark, holds either kind, one JSON object per line, blank lines skipped):

- ARPO / verl rows (recognised by a ``prompt`` key): ``prompt`` a non-empty list of chat messages
  ``{"role": str, "content": str}`` with at least one ``user`` message; ``data_source`` a non-empty string;
  ``reward_model.ground_truth`` in one of the layouts these datasets use:
  a string (verl's gsm8k, ARPO-RL-Reasoning-10K: ``{"ground_truth": "16", "style": "rule"}``),
  a non-empty list of strings (verl's dataset README: ``["72"]``), or
  ``{"target": str | list[str]}`` (Search-R1's nq/hotpotqa preprocessing: ``{"target": golden_answers}``);
  ``extra_info`` an optional dict, kept as ``Example.extra``. Other columns (``ability``, ...) are ignored.
- Plain QA rows: ``question`` (or ``problem``, as ARPO's AIME evaluation files name it) a non-empty string;
  ``answer`` a string, an integer (AIME answers) or a non-empty list of strings; ``data_source`` an optional
  string, default the file's stem. The question becomes a single user message; the other keys go to ``extra``.

A malformed row is a ``DatasetError`` naming the file, the row and the field. Rows are numbered as the tools
that show them do: JSONL by 1-based line number, parquet by 0-based row index; uids are ``"<file name>:<n>"``
with the same numbers. A file without rows is an error too (there would be nothing to sample).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from arpo.config import DATA_SUFFIXES, EMBEDDED_TASKS, ARPOConfig
from arpo.envs.example import Example
from arpo.envs.prompts import system_prompt, tool_specs
from arpo.tools.base import ToolSpec

__all__ = ["DatasetError", "Prompt", "build_prompt", "load_dataset", "load_jsonl", "load_parquet",
           "dataset_entries", "load_prompts", "load_rows", "write_jsonl"]


class DatasetError(ValueError):
    """A dataset file or row that cannot be used; the message names the file, the row and the field."""


class _RowError(Exception):
    """A problem in one row; the loader adds the file and row number."""


# ----------------------------------------------------------------------------------------------------------
# Rows -> Example.


def _messages(prompt: Any) -> tuple[dict[str, str], ...]:
    if prompt is None:
        raise _RowError("field 'prompt': missing or null")
    if not isinstance(prompt, list) or not prompt:
        raise _RowError(f"field 'prompt': expected a non-empty list of chat messages, got {_show(prompt)}")
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise _RowError(f"field 'prompt[{i}]': expected a message {{role, content}}, "
                            f"got {_show(message)}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise _RowError(f"field 'prompt[{i}].{key}': expected a string, "
                                f"got {_show(message.get(key))}")
    if not any(m["role"] == "user" for m in prompt):
        raise _RowError("field 'prompt': has no message with role 'user'")
    return tuple({"role": m["role"], "content": m["content"]} for m in prompt)


def _answer_list(value: Any, field: str) -> tuple[str, ...]:
    """A non-empty string, an int or a non-empty list of non-empty strings -> accepted answers."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (str(value),)
    answers = [value] if isinstance(value, str) else value
    if isinstance(answers, list) and answers and all(isinstance(v, str) and v for v in answers):
        return tuple(answers)
    raise _RowError(f"field '{field}': expected a non-empty string or a non-empty list of them, "
                    f"got {_show(value)}")


def _ground_truth(reward_model: Any) -> tuple[str, ...]:
    if not isinstance(reward_model, Mapping):
        raise _RowError(f"field 'reward_model': expected a dict with 'ground_truth', "
                        f"got {_show(reward_model)}")
    if reward_model.get("ground_truth") is None:  # parquet stores a key absent from some rows as null
        raise _RowError("field 'reward_model.ground_truth': missing or null")
    truth = reward_model["ground_truth"]
    if isinstance(truth, Mapping):
        return _answer_list(truth.get("target"), "reward_model.ground_truth.target")
    return _answer_list(truth, "reward_model.ground_truth")


def _string(row: Mapping, field: str) -> str:
    value = row.get(field)
    if value is None:
        raise _RowError(f"field '{field}': missing or null")
    if not isinstance(value, str) or not value:
        raise _RowError(f"field '{field}': expected a non-empty string, got {_show(value)}")
    return value


def _arpo_example(row: Mapping, uid: str) -> Example:
    extra = row.get("extra_info")
    if extra is not None and not isinstance(extra, Mapping):
        raise _RowError(f"field 'extra_info': expected a dict or null, got {_show(extra)}")
    return Example(
        uid=uid,
        messages=_messages(row.get("prompt")),
        ground_truth=_ground_truth(row.get("reward_model")),
        data_source=_string(row, "data_source"),
        extra=dict(extra or {}),
    )


def _qa_example(row: Mapping, uid: str, default_source: str) -> Example:
    if "question" not in row and "problem" not in row:
        raise _RowError("field 'question': missing (a row needs 'question' and 'answer', "
                        "or ARPO's 'prompt', 'reward_model' and 'data_source')")
    key = "question" if "question" in row else "problem"
    question = _string(row, key)
    if row.get("answer") is None:
        raise _RowError("field 'answer': missing or null")
    source = _string(row, "data_source") if "data_source" in row else default_source
    extra = {k: v for k, v in row.items() if k not in (key, "answer", "data_source")}
    return Example(uid=uid, messages=({"role": "user", "content": question},),
                   ground_truth=_answer_list(row["answer"], "answer"), data_source=source, extra=extra)


def _example(row: Any, uid: str, default_source: str) -> Example:
    if not isinstance(row, Mapping):
        raise _RowError(f"expected a JSON object, got {_show(row)}")
    return _arpo_example(row, uid) if "prompt" in row else _qa_example(row, uid, default_source)


def _show(value: Any) -> str:
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{text} ({type(value).__name__})"


# ----------------------------------------------------------------------------------------------------------
# Files.


def load_jsonl(path: str | Path) -> list[Example]:
    """Examples from a JSONL file of ARPO and/or plain QA rows (see the module docstring); blank lines are
    skipped."""
    path = Path(path)
    examples = []
    for line_no, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            examples.append(_example(_json(line), f"{path.name}:{line_no}", path.stem))
        except _RowError as err:
            raise DatasetError(f"{path}: line {line_no}: {err}") from None
    return _non_empty(examples, path)


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise _RowError(f"invalid JSON: {err}") from None


def load_parquet(path: str | Path) -> list[Example]:
    """Examples from an ARPO/verl parquet file (``prompt``, ``reward_model``, ``data_source``,
    ``extra_info``; see the module docstring)."""
    import pyarrow.parquet

    path = Path(path)
    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except (OSError, pyarrow.ArrowException) as err:
        raise DatasetError(f"{path}: cannot read parquet file: {err}") from None
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(_arpo_example(row, f"{path.name}:{i}"))
        except _RowError as err:
            raise DatasetError(f"{path}: row {i}: {err}") from None
    return _non_empty(examples, path)


def _read_text(path: Path) -> str:
    """The file's text, UTF-8 with or without a byte-order mark (Windows tools write one)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read: {err}") from None


def _non_empty(examples: list[Example], path: Path) -> list[Example]:
    if not examples:
        raise DatasetError(f"{path}: no rows")
    return examples


def load_rows(rows: Iterable[Any], name: str = "rows") -> list[Example]:
    """Examples from in-memory rows (dicts in either accepted layout, e.g. a list of dicts or a Hugging Face
    ``datasets.Dataset``, which iterates as dicts); uids are ``"<name>:<i>"`` (0-based), errors name the row."""
    if isinstance(rows, (str, bytes, Mapping)):
        raise DatasetError(f"{name}: expected an iterable of rows (dicts), got {_show(rows)}")
    try:
        items = iter(rows)
    except TypeError:
        raise DatasetError(f"{name}: expected an iterable of rows (dicts), got {_show(rows)}") from None
    examples = []
    for i, row in enumerate(items):
        try:
            examples.append(_example(row, f"{name}:{i}", name))
        except _RowError as err:
            raise DatasetError(f"{name}: row {i}: {err}") from None
    return _non_empty(examples, Path(name))


def dataset_entries(data: Any) -> list[str] | None:
    """``data`` as ``data.train`` / ``data.test`` entries when it names files or tasks (a path, a name, or a
    non-empty list of them), else None (it is rows, for ``load_rows``)."""
    if isinstance(data, (str, Path)):
        return [str(data)]
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, (str, Path)) for d in data):
        return [str(d) for d in data]
    return None


def write_jsonl(examples: Sequence[Example], path: str | Path) -> Path:
    """``examples`` as ARPO rows in a JSONL file (written atomically); ``load_jsonl`` reads them back with the
    same messages, answers, data source and extra fields (values JSON cannot hold are written as their str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"prompt": list(e.messages), "data_source": e.data_source,
             "reward_model": {"ground_truth": list(e.ground_truth)}, "extra_info": e.extra} for e in examples)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_dataset(entry: str, split: str, seed: int = 0) -> list[Example]:
    """The examples of one ``data.train`` / ``data.test`` entry.

    An embedded task name (``arith``, ``kbqa``) gives that task's ``split``, generated with ``seed``; a file
    is read whole (it is the split; ``split`` and ``seed`` do not apply to it).
    """
    if entry in EMBEDDED_TASKS:
        from arpo.envs.tasks import load_task

        return load_task(entry, split, seed)
    if entry.endswith(".parquet"):
        return load_parquet(entry)
    if entry.endswith(".jsonl"):
        return load_jsonl(entry)
    raise DatasetError(f"{entry!r}: expected an embedded task ({', '.join(EMBEDDED_TASKS)}) "
                       f"or a file ending in {' or '.join(DATA_SUFFIXES)}")


# ----------------------------------------------------------------------------------------------------------
# Prompts: one example's (build_prompt), a run's (load_prompts).


def build_prompt(
    tokenizer: Any,
    example: Example,
    tools: Sequence[str | ToolSpec],
    system: str | None = None,
    max_prompt_tokens: int | None = None,
    tool_format: str = "tags",
) -> list[int]:
    """Prompt token ids: the example's messages, after a system message unless the example has its own
    (``system``, or the built-in ``system_prompt(tools, tool_format)`` when None; ``tools``: built-in names or
    ``ToolSpec``s), in the tokenizer's chat template with the assistant turn opened. With ``tool_format``
    "json" the tools' schemas go to the template as ``tools=[...]`` (it renders them and its call syntax).
    Longer than ``max_prompt_tokens`` is a ``DatasetError`` naming the example."""
    messages = list(example.messages)
    if messages[0]["role"] != "system":
        content = system_prompt(tools, tool_format) if system is None else system
        messages.insert(0, {"role": "system", "content": content})
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} "
                         "has no chat template; use an instruct/chat model's tokenizer or set one")
    schemas = {"tools": [s.schema() for s in tool_specs(tools)]} if tool_format == "json" and tools else {}
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **schemas)
    if isinstance(ids, Mapping):  # transformers 5 returns a BatchEncoding, 4.x a list
        ids = ids["input_ids"]
    ids = list(ids)
    if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
        raise DatasetError(f"example {example.uid}: prompt is {len(ids)} tokens, more than "
                           f"data.max_prompt_tokens = {max_prompt_tokens}")
    return ids


@dataclasses.dataclass(frozen=True)
class Prompt:
    """An example and its prompt token ids (``build_prompt``)."""

    example: Example
    ids: tuple[int, ...]


def load_prompts(cfg: ARPOConfig, tokenizer, split: str, *, tools: Sequence[str | ToolSpec] | None = None,
                 limit: int = 0, no_bar: bool | None = None) -> list[Prompt]:
    """The prompts of ``data.train`` (split "train") or ``data.test`` (split "test"); with ``limit`` > 0 at
    most that many per entry (the first ones). ``tools`` are described in the prompt in ``tools.format``
    (default: ``tools.enabled``; pass the ``ToolBox.specs`` of a run with user tools). ``no_bar`` is tqdm's
    ``disable`` (None: a bar only on a terminal)."""
    entries = cfg.data.train if split == "train" else cfg.data.test
    examples: list[Example] = []
    for entry in entries:
        rows = load_dataset(entry, split)  # the tasks' canonical data: train.seed never changes the questions
        examples += rows[:limit] if limit > 0 else rows
    bar = tqdm(examples, desc=f"tokenising {split} prompts", unit="prompt", disable=no_bar, leave=False)
    tools = cfg.tools.enabled if tools is None else tools
    return [Prompt(ex, tuple(build_prompt(tokenizer, ex, tools, cfg.data.system_prompt, cfg.data.max_prompt_tokens,
                                          cfg.tools.format))) for ex in bar]
