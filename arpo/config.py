"""Run configuration: flat typed dataclasses, YAML files and ``--set section.field=value`` overrides.

An ``ARPOConfig`` holds one dataclass per section (``model``, ``data``, ``rollout``, ``tools``, ``algo``,
``train``), nested exactly one level deep. Every field has a type, a default and ``metadata["help"]``;
string enums list their values in ``metadata["choices"]``.

Values are checked strictly, wherever they come from (a YAML file, an override, or Python code calling the
constructors): an unknown section or key is an error that lists the valid ones; a wrong type is an error that
names the key, the expected type and the value (``bool`` is not an ``int``; an ``int`` is accepted for a
``float`` and converted; ``Optional[X]`` accepts ``null``; lists are checked element by element). Ranges and
choices are checked in each dataclass's ``__post_init__``, cross-section constraints in ``ARPOConfig``'s.
Every error is a ``ConfigError`` (a ``ValueError``) whose message starts with the full key, e.g. ``rollout.N``.

The dataclasses are frozen: derive a changed config with ``with_overrides(cfg, [...])`` or
``dataclasses.replace`` (both validate again).

YAML dialect: PyYAML's safe loader, plus one fix: ``1e-6`` (no dot) is read as a float, as YAML 1.2 and
every user expect, not as the string YAML 1.1 makes of it. ``dump_yaml`` quotes strings that would read back
as something else, so dump → load round-trips exactly. Relative paths are relative to the working directory.
"""

import argparse
import dataclasses
import difflib
import functools
import importlib
import math
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml


__all__ = [
    "DATA_SUFFIXES",
    "EMBEDDED_TASKS",
    "LORA_TARGETS",
    "REWARD_FNS",
    "TOOL_FORMATS",
    "ARPOConfig",
    "AlgoConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RolloutConfig",
    "ToolsConfig",
    "TrainConfig",
    "add_config_args",
    "as_config",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "dump_yaml",
    "load_config",
    "parse_override",
    "with_overrides",
]

EMBEDDED_TASKS = ("arith", "kbqa")
DATA_SUFFIXES = (".parquet", ".jsonl")
# LoRA's default targets: the attention and MLP projections of Qwen2/Llama-style decoders
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
REWARD_FNS = ("auto", "exact_match", "f1", "math", "format", "random")
TOOL_FORMATS = ("tags", "json")  # arpo.tools.formats.FORMATS (tests/test_choices.py keeps them equal)
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OVERRIDE_FORM = "SECTION.FIELD=VALUE (e.g. rollout.M=16, algo.dual_clip=null, data.train=[arith, kbqa])"


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key and what is allowed."""


# ----------------------------------------------------------------------------------------------------------
# YAML dialect: safe loader/dumper that also resolve 1e-6 / 5E+3 (no dot) as floats.


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses duplicate keys (PyYAML would keep the last one silently) and reads integers
    as YAML 1.2 does."""

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text)


    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)

# YAML 1.2 core-schema integers (decimal, 0o octal, 0x hex) instead of YAML 1.1's (010 -> 8, 1:00 -> 60)
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")

for _cls in (_Loader, _Dumper):
    _cls.yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
        for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _cls.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _flow_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(list, _flow_list)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)  # sections in block style, lists inline: `train: [arith, kbqa]`


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# ----------------------------------------------------------------------------------------------------------
# Field helpers and strict type coercion.


class _Registered(Sequence):
    """The names of a registry in a module that may be heavy (it may import torch): imported when first needed,
    read live like a dict's keys()."""

    def __init__(self, module: str, attr: str):
        self.module, self.attr = module, attr

    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.attr))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self):
        return iter(self._names())


def import_callable(path: str, what: str, error: type[Exception]) -> Any:
    """The callable named by an import path ``package.module:attr`` (``data.reward``, ``tools.custom``); ``error``
    (naming ``what`` and the path) when the module cannot be imported, lacks the attribute, or it is not callable."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise error(f"{what} {path!r}: cannot import module {module_name!r}: {err}") from err
    if not hasattr(module, attr):
        raise error(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise error(f"{what} {path!r}: {module_name}.{attr} is not callable (it is a {type(obj).__name__})")
    return obj


def _f(default: Any, help: str, choices: Sequence[str] = ()) -> Any:
    """A dataclass field with help text (and allowed values for string enums / lists of them). A registry's
    names stay live (_Registered): the choices of ``algo.estimator`` and ``algo.loss`` are the names registered
    at the time of the check."""
    live = isinstance(choices, _Registered)
    metadata = {"help": help, "choices": choices if live else tuple(choices)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_UNIONS = (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) in _UNIONS:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if typing.get_origin(tp) is dict:
        return f"mapping of {' to '.join(_type_name(a) for a in typing.get_args(tp))}"
    return tp.__name__


def _show(value: Any) -> str:
    text = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return "null" if value is None else f"{text} ({type(value).__name__})"


def _type_error(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Return ``value`` checked against type ``tp`` (int -> float converted, lists copied) or raise."""
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        try:
            return _coerce(key, inner, value)
        except ConfigError:
            raise _type_error(key, tp, value) from None
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value)
        (elem,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", elem, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, tp, value)
        k_tp, v_tp = typing.get_args(tp)
        return {_coerce(f"{key} (a key)", k_tp, k): _coerce(f"{key}.{k}", v_tp, v) for k, v in value.items()}
    if isinstance(value, bool) and tp is not bool:
        raise _type_error(key, tp, value)
    if tp is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {_show(value)} is too large for a float") from None
    if isinstance(value, tp):
        return value
    raise _type_error(key, tp, value)


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


class _Section:
    """Shared ``__post_init__`` of the section dataclasses: types, choices, then ``validate``."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            key = self._key(f.name)
            value = _coerce(key, _hints(type(self))[f.name], getattr(self, f.name))
            _check_choices(key, value, f.metadata["choices"])
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Range and cross-field checks of one section (overridden per section)."""

    def _key(self, name: str) -> str:
        return f"{self.section}.{name}"

    def _require(self, ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{self._key(name)}: must be {allowed}; got {getattr(self, name)!r}")


def _check_choices(key: str, value: Any, choices: tuple) -> None:
    if not choices:
        return
    for i, v in enumerate(value if isinstance(value, list) else [value]):
        if v not in choices:
            where = f"{key}[{i}]" if isinstance(value, list) else key
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, choices))}; got {v!r}")


# ----------------------------------------------------------------------------------------------------------
# The sections.


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """The policy model and tokenizer (any transformers causal LM directory)."""

    section: ClassVar[str] = "model"
    path: str = _f(
        "assets/demo-agent", "model directory (save_pretrained format); default: the embedded demo agent"
    )
    tokenizer: str | None = _f(None, "tokenizer directory; null = model.path")
    dtype: str = _f(
        "float32",
        "dtype the weights are loaded in (rollout engine, reference model)",
        ("float32", "bfloat16", "float16"),
    )
    ref_path: str | None = _f(
        None,
        "frozen reference model for the KL term; null = a frozen copy of model.path "
        "(loaded only when algo.kl_coef > 0; with LoRA: the policy with its adapters off, no copy)",
    )
    lora_r: int = _f(
        0,
        "LoRA rank (peft): > 0 trains only low-rank adapters on model.lora_targets (optimizer state and "
        "checkpoints hold only them; the rollout engine gets merged weights); 0 = full fine-tuning",
    )
    lora_alpha: float = _f(
        16.0, "LoRA scale numerator: each target's weight becomes W + (lora_alpha / lora_r)·B·A"
    )
    lora_targets: list[str] = _f(
        list(LORA_TARGETS),
        "modules that get LoRA adapters: nn.Linear layers whose name equals an entry or ends in '.<entry>' "
        "(peft's rule); default: every attention and MLP projection of Qwen2/Llama-style models; the LM head "
        "is refused",
    )
    lora_dropout: float = _f(
        0.0,
        "dropout on the adapters' input in training passes; the old-log-prob pass runs without it, so > 0 "
        "makes the first-epoch ratio differ from 1",
    )

    def validate(self) -> None:
        self._require(self.path != "", "path", "a non-empty path")
        self._require(self.lora_r >= 0, "lora_r", ">= 0 (0 = full fine-tuning)")
        alpha_ok = 0.0 < self.lora_alpha and math.isfinite(self.lora_alpha)
        self._require(alpha_ok, "lora_alpha", "finite and > 0")
        self._require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "in [0, 1)")
        self._require(len(self.lora_targets) > 0 and all(self.lora_targets), "lora_targets",
                      "a non-empty list of non-empty module names")
        self._require(len(set(self.lora_targets)) == len(self.lora_targets), "lora_targets",
                      "a list without duplicates")


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Training/evaluation prompts: embedded tasks or dataset files, and the prompt format."""

    section: ClassVar[str] = "data"
    train: list[str] = _f(
        ["arith"],
        "training sets: embedded task names (arith, kbqa; their train split) and/or "
        "files (ARPO .parquet or .jsonl); several are concatenated",
    )
    test: list[str] = _f(["arith"], "evaluation sets, as data.train (embedded tasks use their test split)")
    max_prompt_tokens: int = _f(
        1536,
        "longest prompt in tokens (chat template and system prompt included); "
        "longer prompts are an error naming the row",
    )
    system_prompt: str | None = _f(None, "system prompt; null = the built-in one describing tools.enabled")
    reward: str = _f(
        "auto",
        "reward function: auto (per task / data_source), exact_match, f1, math, format, "
        "random (a control: Bernoulli(data.random_reward_p), independent of the answer, seeded by train.seed), "
        "or a custom one as 'package.module:function'",
    )
    random_reward_p: float = _f(0.5, "probability of reward 1 under data.reward = random (the control)")

    def validate(self) -> None:
        self._require(len(self.train) > 0, "train", "a non-empty list of task names or files")
        for name in ("train", "test"):
            for i, entry in enumerate(getattr(self, name)):
                _check_dataset(f"{self._key(name)}[{i}]", entry)
        self._require(self.max_prompt_tokens >= 1, "max_prompt_tokens", ">= 1")
        self._require(0.0 <= self.random_reward_p <= 1.0, "random_reward_p", "a probability in [0, 1]")
        self._require(
            self.reward in REWARD_FNS or bool(_IMPORT_PATH.match(self.reward)),
            "reward",
            f"one of {', '.join(REWARD_FNS)} or an import path 'package.module:function'",
        )


def _check_dataset(key: str, entry: str) -> None:
    if entry not in EMBEDDED_TASKS and not entry.endswith(DATA_SUFFIXES):
        raise ConfigError(
            f"{key}: must be an embedded task ({', '.join(EMBEDDED_TASKS)}) or a file ending in "
            f"{' or '.join(DATA_SUFFIXES)}; got {entry!r}"
        )


@dataclasses.dataclass(frozen=True)
class RolloutConfig(_Section):
    """Sampling: ARPO entropy-adaptive branching (or the GRPO baseline) and the generation engine."""

    section: ClassVar[str] = "rollout"
    mode: str = _f("arpo", "arpo: entropy-adaptive branching; grpo: M independent samples", ("arpo", "grpo"))
    engine: str = _f(
        "hf",
        "generation backend: hf (native, CPU/GPU, KV forking) or sglang (GPU server extra)",
        ("hf", "sglang"),
    )
    rule: str = _f(
        "threshold",
        "branch rule: threshold (paper: branch when P_t > tau) or stochastic "
        "(official code: branch with probability clip(P_t, 0, 1))",
        ("threshold", "stochastic"),
    )
    M: int = _f(16, "global budget: leaves (trajectories) per prompt")
    N: int = _f(8, "initial samples per prompt (arpo mode); the other M-N leaves come from branches")
    Z: int = _f(1, "children forked per branch decision")
    k: int = _f(
        20, "entropy window: tokens after the start / a tool result whose mean entropy is H_init / H_t"
    )
    alpha: float = _f(0.5, "base branch probability in P_t = alpha + beta * (H_t - H_init)")
    beta: float = _f(0.2, "entropy weight in P_t")
    tau: float = _f(0.5, "branch threshold on P_t (rule=threshold)")
    temperature: float = _f(1.0, "sampling temperature (> 0)")
    top_p: float = _f(1.0, "nucleus sampling mass (1 = off)")
    top_k: int = _f(0, "top-k sampling (0 = off)")
    max_response_tokens: int = _f(4096, "longest response per trajectory in tokens, tool results included")
    max_tool_calls: int = _f(3, "tool calls per trajectory; further calls get an error result")
    token_budget: int = _f(65536, "tokens (cached + new) the native engine holds at once; batches are split")
    batch_wait_ms: float = _f(
        0.0, "before each engine call, wait up to this long for pending tool calls, so that their continuations "
        "join the call's batch (0: take only the results already in)"
    )
    share_prefix: bool = _f(
        True, "share prefix KV across samples/branches (false: re-prefill, for benchmarks)"
    )
    sglang_top_logprobs: int = _f(20, "sglang engine: top log-probs per token (entropy is a top-k estimate)")
    weight_sync: str = _f(
        "tensor", "sglang engine: push new weights from memory (tensor) or via disk", ("tensor", "disk")
    )

    def validate(self) -> None:
        self._require(self.M >= 1, "M", ">= 1")
        self._require(1 <= self.N <= self.M, "N", f"in [1, rollout.M] (rollout.M = {self.M})")
        self._require(self.Z >= 1, "Z", ">= 1")
        self._require(
            1 <= self.k <= self.max_response_tokens,
            "k",
            f"in [1, rollout.max_response_tokens] (= {self.max_response_tokens})",
        )
        self._require(0.0 <= self.alpha <= 1.0, "alpha", "in [0, 1]")
        self._require(0.0 <= self.beta and math.isfinite(self.beta), "beta", "finite and >= 0")
        self._require(0.0 <= self.tau <= 1.0, "tau", "in [0, 1]")
        self._validate_sampling()

    def _validate_sampling(self) -> None:
        self._require(
            0.0 < self.temperature and math.isfinite(self.temperature), "temperature", "finite and > 0"
        )
        self._require(0.0 <= self.top_p <= 1.0, "top_p", "in [0, 1]")
        self._require(self.top_k >= 0, "top_k", ">= 0 (0 = off)")
        self._require(self.max_response_tokens >= 1, "max_response_tokens", ">= 1")
        self._require(self.max_tool_calls >= 0, "max_tool_calls", ">= 0")
        self._require(0.0 <= self.batch_wait_ms < math.inf, "batch_wait_ms", "finite and >= 0")
        self._require(self.token_budget >= 1, "token_budget", ">= 1")
        self._require(self.sglang_top_logprobs >= 1, "sglang_top_logprobs", ">= 1")


@dataclasses.dataclass(frozen=True)
class ToolsConfig(_Section):
    """The tools the agent may call: a sandboxed Python interpreter, a search engine, and user tools."""

    section: ClassVar[str] = "tools"
    enabled: list[str] = _f(
        ["python", "search"], "tools described to and callable by the model", ("python", "search")
    )
    format: str = _f(
        "tags",
        "how the model calls tools: 'tags' (<python>code</python>, results in <result>...</result>) or 'json' "
        "(the chat template's native format: tools=[...] schemas in the prompt, <tool_call>{\"name\": ..., "
        "\"arguments\": {...}}</tool_call>, results in the template's tool role; needs a template that renders "
        "tools, e.g. Qwen2.5's). The final answer is <answer>...</answer> in both",
        TOOL_FORMATS,
    )
    python_timeout_s: float = _f(5.0, "wall-clock limit of one python call, seconds")
    python_memory_mb: int = _f(
        1024,
        "memory of one python call, MiB: the address-space limit of each process, and of all of them "
        "together when a cgroup is available",
    )
    python_require_isolation: bool = _f(
        True,
        "python calls fail ('sandbox unavailable') unless the host grants a PID namespace and a private "
        "filesystem or an unprivileged uid; false = run them with rlimits and whatever isolation is granted",
    )
    max_output_bytes: int = _f(
        2048, "tool result text (stdout+stderr, passages) is truncated to this many bytes"
    )
    custom: dict[str, str] = _f(
        {},
        "user tools: name -> 'package.module:factory' (called with no arguments, it returns a callable "
        "(query: str) -> str | ToolResult whose docstring or `description` the model reads)",
    )
    custom_timeout_s: float = _f(10.0, "wall-clock limit of one call of a user tool (tools.custom), seconds")
    pool_size: int = _f(4, "tool calls run concurrently")
    search_index: str | None = _f(
        None,
        "SQLite FTS5 index built by `arpo index`; null = the embedded kbqa corpus (indexed on first use)",
    )
    search_url: str | None = _f(
        None, "HTTP retriever (Search-R1 style POST /retrieve); overrides search_index"
    )
    search_top_k: int = _f(3, "passages returned per search call")
    search_timeout_s: float = _f(10.0, "HTTP retriever timeout per request, seconds")
    search_retries: int = _f(2, "HTTP retriever retries after a failed request")
    search_cache: str | None = _f(None, "persistent SQLite query cache file; null = no persistent cache")

    def validate(self) -> None:
        self._require(len(set(self.enabled)) == len(self.enabled), "enabled", "a list without duplicates")
        self._require(
            0.0 < self.python_timeout_s and math.isfinite(self.python_timeout_s),
            "python_timeout_s",
            "finite and > 0",
        )
        self._require(self.python_memory_mb >= 1, "python_memory_mb", ">= 1")
        self._require(self.max_output_bytes >= 1, "max_output_bytes", ">= 1")
        self._require(self.pool_size >= 1, "pool_size", ">= 1")
        for name, path in self.custom.items():
            if not (_TOOL_NAME.match(name) and name not in self.enabled):
                raise ConfigError(f"tools.custom.{name}: a tool name must be an identifier not in tools.enabled")
            if not _IMPORT_PATH.match(path):
                raise ConfigError(f"tools.custom.{name}: must be an import path 'package.module:factory'; got {path!r}")
        self._require(
            0.0 < self.custom_timeout_s and math.isfinite(self.custom_timeout_s), "custom_timeout_s", "finite and > 0"
        )
        url_ok = self.search_url is None or self.search_url.startswith(("http://", "https://"))
        self._require(url_ok, "search_url", "null or an http:// or https:// URL")
        self._require(self.search_top_k >= 1, "search_top_k", ">= 1")
        self._require(
            0.0 < self.search_timeout_s and math.isfinite(self.search_timeout_s),
            "search_timeout_s",
            "finite and > 0",
        )
        self._require(self.search_retries >= 0, "search_retries", ">= 0")


@dataclasses.dataclass(frozen=True)
class AlgoConfig(_Section):
    """Advantages and the clipped policy-gradient loss (arpo_kernels.policy_loss)."""

    section: ClassVar[str] = "algo"
    estimator: str = _f(
        "grpo",
        "advantage estimator: a name registered in arpo/algos/advantages.py (grpo = group z-score, "
        "drgrpo = r - group mean, rloo = leave-one-out baseline, reinforce_pp = group baseline whitened "
        "over the batch)",
        _Registered("arpo.algos.advantages", "ESTIMATORS"),
    )
    credit: str = _f(
        "soft",
        "credit of leaf advantages to tokens: soft = every token of leaf i carries A_i; hard = a shared "
        "token carries the mean over the leaves below it",
        ("soft", "hard"),
    )
    eps: float = _f(1e-6, "added to the std by the estimators that divide by one (grpo, reinforce_pp)")
    clip_low: float = _f(0.2, "ratio clip below 1 - clip_low")
    clip_high: float = _f(0.2, "ratio clip above 1 + clip_high (clip-higher: > clip_low)")
    dual_clip: float | None = _f(None, "dual clip c > 1 for negative advantages; null = off")
    kl_coef: float = _f(0.0, "weight of the KL penalty to the reference model (0 = no reference model)")
    kl_type: str = _f("low_var_kl", "KL estimator", ("low_var_kl", "k1", "k2"))
    entropy_coef: float = _f(0.0, "weight of the entropy bonus")
    loss: str = _f(
        "ppo_clip",
        "policy-loss variant: a name registered in arpo/algos/losses.py (ppo_clip = token-level clipped "
        "objective, fused kernels; gspo = sequence-level ratio, flat updates only)",
        _Registered("arpo.algos.losses", "LOSSES"),
    )
    agg: str = _f(
        "token-mean", "loss aggregation", ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
    )
    old_logprobs: str = _f(
        "recompute",
        "old-policy log-probs: recompute with the trainer's model before the "
        "first epoch (skipped when the update is one epoch of one mini-batch: then the old policy is the "
        "current one and its log-probs are used, detached), or reuse the sampler's",
        ("recompute", "sampler"),
    )

    def validate(self) -> None:
        self._require(0.0 < self.eps and math.isfinite(self.eps), "eps", "finite and > 0")
        self._require(0.0 <= self.clip_low < 1.0, "clip_low", "in [0, 1)")
        self._require(0.0 <= self.clip_high and math.isfinite(self.clip_high), "clip_high", "finite and >= 0")
        dual_ok = self.dual_clip is None or (1.0 < self.dual_clip and math.isfinite(self.dual_clip))
        self._require(dual_ok, "dual_clip", "null or finite and > 1")
        self._require(0.0 <= self.kl_coef and math.isfinite(self.kl_coef), "kl_coef", "finite and >= 0")
        self._require(math.isfinite(self.entropy_coef), "entropy_coef", "finite")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
    """The training loop: steps, optimiser, batches, update mode, checkpoints, DeepSpeed."""

    section: ClassVar[str] = "train"
    total_steps: int = _f(200, "training steps (one rollout batch + its update each)")
    output_dir: str = _f("runs/arpo", "run directory: checkpoints, metrics.jsonl, config.yaml")
    seed: int = _f(0, "seed of data order, embedded tasks, sampling and initialisation")
    update: str = _f(
        "flat",
        "flat: one row per leaf; packed: each shared token forwarded once (same loss)",
        ("flat", "packed"),
    )
    lr: float = _f(1e-6, "AdamW learning rate")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear warm-up steps")
    schedule: str = _f("constant", "learning-rate schedule after warm-up", ("cosine", "constant"))
    batch_size: int = _f(16, "prompts per step (each yields rollout.M trajectories)")
    mini_batch_size: int = _f(16, "prompts per optimiser step; divides train.batch_size")
    micro_batch_tokens: int = _f(
        16384, "tokens per forward/backward; a mini-batch is split (grad accumulation)"
    )
    ppo_epochs: int = _f(1, "passes over each rollout batch")
    max_grad_norm: float = _f(1.0, "gradient-norm clip")
    grad_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory")
    bf16: bool = _f(False, "bf16 mixed precision (GPU), fp32 master weights")
    save_every: int = _f(50, "checkpoint every K steps (0 = only at the end)")
    keep_checkpoints: int = _f(3, "checkpoints kept in output_dir/checkpoints, newest first (0 = all)")
    eval_every: int = _f(10, "evaluate on data.test every K steps, before the first and after the last (0 = never)")
    eval_limit: int = _f(0, "evaluate on the first K prompts of each data.test entry (0 = all), greedily")
    deepspeed: bool = _f(False, "use a DeepSpeed ZeRO engine (under torchrun / the deepspeed launcher)")
    zero_stage: int = _f(2, "DeepSpeed ZeRO stage (train.deepspeed = true)")
    kernel_backend: str = _f(
        "auto",
        "arpo_kernels backend: auto (triton on CUDA, numba on CPU), triton, numba, torch",
        ("auto", "triton", "numba", "torch"),
    )
    loggers: list[str] = _f([], "extra metric sinks besides metrics.jsonl", ("tensorboard", "wandb"))
    deterministic: bool | None = _f(
        None,
        "bit-identical weights for identical runs and for kill + --resume: a rollout schedule that does not "
        "depend on tool timing, deterministic torch algorithms; null = on for CPU, off on CUDA",
    )

    def validate(self) -> None:
        self._require(self.total_steps >= 1, "total_steps", ">= 1")
        self._require(self.output_dir != "", "output_dir", "a non-empty path")
        self._require(self.seed >= 0, "seed", ">= 0")
        self._require(0.0 < self.lr and math.isfinite(self.lr), "lr", "finite and > 0")
        self._require(
            0.0 <= self.weight_decay and math.isfinite(self.weight_decay), "weight_decay", "finite and >= 0"
        )
        self._require(self.warmup_steps >= 0, "warmup_steps", ">= 0")
        self._validate_batches()
        self._require(self.save_every >= 0, "save_every", ">= 0 (0 = only at the end)")
        self._require(self.eval_every >= 0, "eval_every", ">= 0 (0 = never)")
        self._require(self.keep_checkpoints >= 0, "keep_checkpoints", ">= 0 (0 = all)")
        self._require(self.eval_limit >= 0, "eval_limit", ">= 0 (0 = all)")
        self._require(0 <= self.zero_stage <= 3, "zero_stage", "0, 1, 2 or 3")

    def _validate_batches(self) -> None:
        self._require(self.batch_size >= 1, "batch_size", ">= 1")
        self._require(
            1 <= self.mini_batch_size <= self.batch_size and self.batch_size % self.mini_batch_size == 0,
            "mini_batch_size",
            f"a divisor of train.batch_size (= {self.batch_size})",
        )
        self._require(self.micro_batch_tokens >= 1, "micro_batch_tokens", ">= 1")
        self._require(self.ppo_epochs >= 1, "ppo_epochs", ">= 1")
        self._require(
            0.0 < self.max_grad_norm and math.isfinite(self.max_grad_norm), "max_grad_norm", "finite and > 0"
        )


@dataclasses.dataclass(frozen=True)
class ARPOConfig:
    """A whole run: one dataclass per section, plus the checks that span sections."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig, metadata={"help": "policy model"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "prompts and rewards"})
    rollout: RolloutConfig = dataclasses.field(
        default_factory=RolloutConfig, metadata={"help": "sampling and ARPO branching"}
    )
    tools: ToolsConfig = dataclasses.field(
        default_factory=ToolsConfig, metadata={"help": "python, search and user tools"}
    )
    algo: AlgoConfig = dataclasses.field(default_factory=AlgoConfig, metadata={"help": "advantages and loss"})
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig, metadata={"help": "training loop"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            cls = _hints(ARPOConfig)[f.name]
            if not isinstance(getattr(self, f.name), cls):
                raise _type_error(f.name, cls, getattr(self, f.name))
        self._validate_lengths()
        if self.train.update == "packed" and self.algo.loss != "ppo_clip":
            from .algos.losses import PACKED_EXACT

            if self.algo.loss not in PACKED_EXACT:
                raise ConfigError(f"algo.loss: {self.algo.loss!r} has no exact packed form; use train.update = flat")
        if self.train.deepspeed and self.model.lora_r > 0:
            raise ConfigError(
                "model.lora_r: LoRA is not supported with train.deepspeed (the DeepSpeed backend gathers, "
                "fingerprints and saves plain weights only); set model.lora_r = 0 or train.deepspeed = false; "
                f"got {self.model.lora_r}"
            )
        if self.train.eval_every > 0 and not self.data.test:
            raise ConfigError(
                "train.eval_every: must be 0 when data.test is empty (nothing to evaluate); "
                f"got {self.train.eval_every}"
            )

    def _validate_lengths(self) -> None:
        longest = self.data.max_prompt_tokens + self.rollout.max_response_tokens
        for key, value in (
            ("rollout.token_budget", self.rollout.token_budget),
            ("train.micro_batch_tokens", self.train.micro_batch_tokens),
        ):
            if value < longest:
                raise ConfigError(
                    f"{key}: must be >= data.max_prompt_tokens + rollout.max_response_tokens "
                    f"(= {longest}) so that one trajectory fits; got {value}"
                )


def _sections() -> dict:
    """Section name -> section dataclass, in declaration order."""
    return {f.name: _hints(ARPOConfig)[f.name] for f in dataclasses.fields(ARPOConfig)}


# ----------------------------------------------------------------------------------------------------------
# Dicts, YAML files and overrides.


# Keys that were renamed or replaced: their unknown-key error says what to write instead.
_MOVED = {
    "algo.advantage": "algo.credit",
    "algo.scale_std": "algo.estimator (scale_std: true is estimator: grpo; false is estimator: drgrpo)",
}


def _unknown(what: str, name: str, valid: Sequence[str], valid_in: str, where: str, moved: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (now {_MOVED[moved]})" if moved in _MOVED else f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}unknown {what}; valid {valid_in}: {', '.join(valid)}{hint}")


def _section_class(section: Any, where: str) -> type:
    sections = _sections()
    if section not in sections:
        raise _unknown(f"section {section!r}", str(section), list(sections), "sections", where)
    return sections[section]


def _field_type(section: str, name: Any, where: str) -> Any:
    """The declared type of ``section.name``, or a ConfigError listing the valid keys."""
    cls = _section_class(section, where)
    if not isinstance(name, str):
        raise ConfigError(f"{where}keys in section {section!r} must be strings; got {_show(name)}")
    names = [f.name for f in dataclasses.fields(cls)]
    if name not in names:
        raise _unknown(f"key '{section}.{name}'", name, names, f"keys in {section!r}", where, f"{section}.{name}")
    return _hints(cls)[name]


def _merge(tree: dict, data: Any, where: str) -> dict:
    """Check ``data`` ({section: {key: value}}) key by key and type by type, and merge it into ``tree``."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}expected a mapping of sections ({', '.join(_sections())}); got {_show(data)}"
        )
    for section, values in data.items():
        _section_class(section, where)
        if values is None:  # a section whose keys are all commented out
            continue
        if not isinstance(values, dict):
            raise ConfigError(
                f"{where}section {section!r} must be a mapping of keys to values; got {_show(values)}"
            )
        for name, value in values.items():
            tp = _field_type(section, name, where)
            try:
                tree.setdefault(section, {})[name] = _coerce(f"{section}.{name}", tp, value)
            except ConfigError as err:
                raise ConfigError(f"{where}{err}") from None
    return tree


def _build(tree: dict) -> ARPOConfig:
    sections = _sections()
    return ARPOConfig(
        **{name: cls(**tree[name]) if name in tree else cls() for name, cls in sections.items()}
    )


def config_from_dict(d: dict) -> ARPOConfig:
    """Build and validate a config from ``{section: {field: value}}``; missing keys take their defaults."""
    return _build(_merge({}, d, ""))


def config_to_dict(cfg: ARPOConfig) -> dict:
    """``{section: {field: value}}`` with every field (a deep copy)."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: ARPOConfig) -> str:
    """The full config as YAML text; ``load_config`` of it gives an equal config."""
    return yaml.dump(
        config_to_dict(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,
    )


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"section.field=value"`` -> ``(section, field, value)``, the value parsed as YAML."""
    key, eq, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot or not section or not name or "." in name:
        raise ConfigError(f"malformed override {text!r}: expected {_OVERRIDE_FORM}")
    try:
        return section, name, _yaml_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {err}") from None


def _apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides must be a list of {_OVERRIDE_FORM} strings, not one string: {overrides!r}"
        )
    for text in overrides or ():
        if not isinstance(text, str):
            raise ConfigError(f"override {text!r}: expected a string {_OVERRIDE_FORM}")
        section, name, value = parse_override(text)
        _merge(tree, {section: {name: value}}, f"--set {text!r}: ")
    return tree


def _read_yaml(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    return {} if data is None else data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ARPOConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``section.field=value`` overrides in order."""
    tree = _merge({}, _read_yaml(str(path)), f"{path}: ") if path is not None else {}
    return _build(_apply_overrides(tree, overrides))


def as_config(config: "ARPOConfig | dict | str | Path | None" = None,
              overrides: "Sequence[str] | dict[str, Any]" = ()) -> ARPOConfig:
    """A config from what a Python caller has: an ``ARPOConfig``, a ``{section: {field: value}}`` dict, a YAML
    file path or None (the defaults); then ``overrides``, as ``"section.field=value"`` strings or a
    ``{"section.field": value}`` dict (values as Python objects, not YAML text). Everything is validated."""
    if isinstance(config, ARPOConfig):
        tree = config_to_dict(config)
    elif isinstance(config, dict):
        tree = _merge({}, config, "")
    elif isinstance(config, (str, Path)):
        tree = _merge({}, _read_yaml(str(config)), f"{config}: ")
    elif config is None:
        tree = {}
    else:
        raise ConfigError(f"config: expected an ARPOConfig, a dict, a YAML path or None; got {_show(config)}")
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            section, dot, name = str(key).partition(".")
            if not dot or not name or "." in name:
                raise ConfigError(f"override key {key!r}: expected 'section.field' (e.g. 'rollout.M')")
            _merge(tree, {section: {name: value}}, f"override {key!r}: ")
        return _build(tree)
    return _build(_apply_overrides(tree, overrides))


def with_overrides(cfg: ARPOConfig, overrides: Sequence[str]) -> ARPOConfig:
    """A copy of ``cfg`` with ``section.field=value`` overrides applied (and validated)."""
    return _build(_apply_overrides(config_to_dict(cfg), overrides))


# ----------------------------------------------------------------------------------------------------------
# Command line.


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config PATH`` and repeatable ``--set SECTION.FIELD=VALUE`` (stored as ``args.overrides``)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="YAML run config (sections: " + ", ".join(_sections()) + "); omitted keys keep defaults",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        action="append",
        default=[],
        help="override one field after the file, value parsed as YAML "
        "(e.g. --set rollout.M=8 --set algo.dual_clip=3); repeatable",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ARPOConfig:
    """The config named by parsed ``--config`` / ``--set`` arguments."""
    return load_config(args.config, args.overrides)


def describe_config() -> str:
    """One line per key: ``section.field  type = default  help [choices]`` (for --help epilogs and docs)."""
    default = ARPOConfig()
    lines = []
    for section, cls in _sections().items():
        for f in dataclasses.fields(cls):
            value = getattr(getattr(default, section), f.name)
            choices = f" [{' | '.join(f.metadata['choices'])}]" if f.metadata["choices"] else ""
            lines.append(
                f"{section}.{f.name}  {_type_name(_hints(cls)[f.name])} = "
                f"{yaml.dump(value, Dumper=_Dumper, default_flow_style=True).splitlines()[0]}"
                f"  {f.metadata['help']}{choices}"
            )
    return "\n".join(lines)
