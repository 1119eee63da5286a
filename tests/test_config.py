"""Tests of arpo.config: defaults, YAML loading, --set overrides, strict typing, validation, round trip."""

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from arpo.algos.advantages import ESTIMATORS, register_estimator
from arpo.config import (
    AlgoConfig,
    ARPOConfig,
    ConfigError,
    RolloutConfig,
    TrainConfig,
    add_config_args,
    config_from_args,
    config_from_dict,
    config_to_dict,
    describe_config,
    dump_yaml,
    load_config,
    parse_override,
    with_overrides,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def raises(match: str):
    """pytest.raises(ConfigError) matching ``match`` literally."""
    return pytest.raises(ConfigError, match=re.escape(match))


# ---------------------------------------------------------------------------------------------- defaults


def test_defaults_are_valid_and_follow_the_paper():
    cfg = ARPOConfig()
    assert cfg == load_config() == config_from_dict({})
    r = cfg.rollout
    assert (r.M, r.N, r.Z, r.k, r.alpha, r.beta, r.tau) == (16, 8, 1, 20, 0.5, 0.2, 0.5)
    assert (r.mode, r.engine, r.rule) == ("arpo", "hf", "threshold")
    assert cfg.tools.python_timeout_s == 5.0 and cfg.tools.max_output_bytes == 2048
    a = cfg.algo
    assert (a.estimator, a.credit, a.eps, a.clip_low, a.clip_high, a.dual_clip) == (
        "grpo",
        "soft",
        1e-6,
        0.2,
        0.2,
        None,
    )
    assert (a.kl_coef, a.kl_type, a.entropy_coef, a.agg) == (0.0, "low_var_kl", 0.0, "token-mean")


def test_every_field_has_help_and_every_section_is_frozen():
    for section in dataclasses.fields(ARPOConfig):
        assert section.metadata["help"]
        for f in dataclasses.fields(getattr(ARPOConfig(), section.name)):
            assert f.metadata["help"], f"{section.name}.{f.name} has no help"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ARPOConfig().rollout.M = 4  # type: ignore[misc]


def test_estimator_choices_are_the_registry():
    (field,) = [f for f in dataclasses.fields(AlgoConfig) if f.name == "estimator"]
    assert tuple(field.metadata["choices"]) == tuple(ESTIMATORS)
    try:
        @register_estimator("test_zero")
        def zero(rewards, *, eps):
            return [0.0 * r for r in rewards]

        assert tuple(field.metadata["choices"]) == tuple(ESTIMATORS)
        assert load_config(None, ["algo.estimator=test_zero"]).algo.estimator == "test_zero"
        assert "| test_zero]" in describe_config()
    finally:
        ESTIMATORS.pop("test_zero")
    with raises("algo.estimator: must be one of"):
        load_config(None, ["algo.estimator=test_zero"])


@pytest.mark.parametrize("override, now", [
    ("algo.advantage=hard", "(now algo.credit)"),
    ("algo.scale_std=false", "(now algo.estimator (scale_std: true is estimator: grpo; false is estimator: drgrpo))"),
])
def test_renamed_keys_say_what_replaced_them(override, now):
    with raises(now):
        load_config(None, [override])


def test_describe_config_lists_every_key():
    text = describe_config()
    assert sum(
        len(dataclasses.fields(getattr(ARPOConfig(), s))) for s in config_to_dict(ARPOConfig())
    ) == len(text.splitlines())
    assert "rollout.M  int = 16  " in text
    assert "algo.dual_clip  float or null = null" in text


# ------------------------------------------------------------------------------------------------ YAML


def test_yaml_file_sets_fields_and_keeps_defaults(tmp_path):
    path = write(
        tmp_path, "rollout:\n  M: 8\n  N: 4\nalgo:\n  credit: hard\n  eps: 1e-8\ntrain:\n  lr: 3e-6\n"
    )
    cfg = load_config(path)
    assert (cfg.rollout.M, cfg.rollout.N, cfg.rollout.Z) == (8, 4, 1)
    assert cfg.algo.credit == "hard"
    assert cfg.algo.eps == 1e-8 and isinstance(cfg.algo.eps, float)  # YAML 1.1 would read "1e-8" as a string
    assert cfg.train.lr == 3e-6
    assert cfg.model == ARPOConfig().model


def test_empty_file_and_empty_section_give_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing yet\n")) == ARPOConfig()
    assert load_config(write(tmp_path, "rollout:\n  # M: 8\n", "b.yaml")) == ARPOConfig()


def test_file_that_is_not_a_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "- rollout\n- algo\n", "list.yaml")
    with raises(
        f"{path}: expected a mapping of sections (model, data, rollout, tools, algo, train); got ['rollout'"
    ):
        load_config(path)


def test_section_that_is_not_a_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "rollout: 16\n", "sec.yaml")
    with raises(f"{path}: section 'rollout' must be a mapping of keys to values; got 16 (int)"):
        load_config(path)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with raises(f"{missing}: cannot read config file"):
        load_config(missing)
    bad = write(tmp_path, "rollout: [M: 8\n", "bad.yaml")
    with raises(f"{bad}: invalid YAML"):
        load_config(bad)


def test_errors_in_a_file_name_the_file_and_the_key(tmp_path):
    path = write(tmp_path, "rollout:\n  M: true\n", "typed.yaml")
    with raises(f"{path}: rollout.M: expected int, got True (bool)"):
        load_config(path)


def test_demo_yaml_loads():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.model.path == "assets/demo-agent"
    assert cfg.rollout.mode == "arpo" and cfg.rollout.M == 8 and cfg.rollout.N == 4
    assert cfg.data.train == ["arith", "kbqa"]
    assert cfg.train.update == "packed"
    assert cfg.train.batch_size == cfg.train.mini_batch_size  # one optimiser step per rollout batch


def test_shipped_configs_load_and_differ_only_where_documented():
    demo = config_to_dict(load_config(REPO / "configs" / "demo.yaml"))
    grpo = config_to_dict(load_config(REPO / "configs" / "demo_grpo.yaml"))
    diff = {(s, k) for s in demo for k in demo[s] if demo[s][k] != grpo[s][k]}
    assert diff == {("rollout", "mode"), ("train", "output_dir")}
    study = config_to_dict(load_config(REPO / "configs" / "study.yaml"))  # the demo's recipe on kbqa alone
    diff = {(s, k) for s in demo for k in demo[s] if demo[s][k] != study[s][k]}
    assert diff <= {("data", "train"), ("data", "test"), ("data", "random_reward_p"), ("train", "output_dir"),
                    ("train", "total_steps"), ("train", "batch_size"), ("train", "mini_batch_size")}
    big = load_config(REPO / "configs" / "qwen2.5-7b-arpo.yaml")
    assert big.rollout.engine == "sglang" and big.train.deepspeed and big.train.zero_stage == 3
    assert big.train.bf16 and big.data.train[0].endswith(".parquet")


# ------------------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "override, section, name, expected",
    [
        ("rollout.M=32", "rollout", "M", 32),  # int
        ("algo.clip_high=0.28", "algo", "clip_high", 0.28),  # float
        ("rollout.temperature=2", "rollout", "temperature", 2.0),  # float from int
        ("algo.eps=1e-6", "algo", "eps", 1e-6),  # float without a dot
        ("train.bf16=true", "train", "bf16", True),  # bool
        ("algo.estimator=rloo", "algo", "estimator", "rloo"),
        ("rollout.mode=grpo", "rollout", "mode", "grpo"),  # str
        ("train.output_dir=/tmp/run 1", "train", "output_dir", "/tmp/run 1"),
        ("model.path='123'", "model", "path", "123"),  # quoted str that looks like an int
        ("algo.dual_clip=3", "algo", "dual_clip", 3.0),  # Optional[float] from int
        ("model.tokenizer=null", "model", "tokenizer", None),  # null for Optional
        ("data.train=[arith, kbqa]", "data", "train", ["arith", "kbqa"]),  # list[str]
        ("train.loggers=[]", "train", "loggers", []),
        ("data.system_prompt=a=b", "data", "system_prompt", "a=b"),  # '=' inside the value
    ],
)
def test_override_each_type(override, section, name, expected):
    value = getattr(getattr(load_config(overrides=[override]), section), name)
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_apply_after_the_file_in_order(tmp_path):
    path = write(tmp_path, "rollout:\n  M: 8\n  N: 4\n")
    cfg = load_config(path, ["rollout.M=12", "rollout.N=6", "rollout.M=10"])
    assert (cfg.rollout.M, cfg.rollout.N) == (10, 6)


def test_ranges_are_checked_on_the_final_config(tmp_path):
    path = write(tmp_path, "rollout:\n  M: 8\n  N: 12\n")  # invalid alone, fixed by the override
    assert load_config(path, ["rollout.M=12"]).rollout.N == 12
    with raises("rollout.N: must be in [1, rollout.M] (rollout.M = 8); got 12"):
        load_config(path)


def test_override_n_above_m_after_file(tmp_path):
    path = write(tmp_path, "rollout:\n  M: 8\n")
    with raises("rollout.N: must be in [1, rollout.M] (rollout.M = 8); got 9"):
        load_config(path, ["rollout.N=9"])


def test_with_overrides_and_replace_revalidate():
    cfg = with_overrides(ARPOConfig(), ["rollout.M=4", "rollout.N=2"])
    assert (cfg.rollout.M, cfg.rollout.N) == (4, 2)
    assert ARPOConfig().rollout.M == 16
    with raises("rollout.N: must be in [1, rollout.M] (rollout.M = 4); got 5"):
        with_overrides(cfg, ["rollout.N=5"])
    with raises("rollout.Z: must be >= 1; got 0"):
        dataclasses.replace(cfg.rollout, Z=0)


@pytest.mark.parametrize("text", ["rollout.M", "M=16", "=16", ".M=16", "rollout.=16", "rollout.M.x=1", ""])
def test_malformed_override_shows_the_expected_form(text):
    with raises(f"malformed override {text!r}: expected SECTION.FIELD=VALUE (e.g. rollout.M=16"):
        load_config(overrides=[text])


def test_override_value_that_is_not_yaml():
    with raises("override 'data.train=[arith': the value is not valid YAML"):
        parse_override("data.train=[arith")


def test_overrides_given_as_one_string_are_rejected():
    with raises("overrides must be a list of SECTION.FIELD=VALUE"):
        load_config(overrides="rollout.M=8")  # type: ignore[arg-type]


def test_parse_override_returns_parsed_value():
    assert parse_override("algo.dual_clip=null") == ("algo", "dual_clip", None)
    assert parse_override(" rollout.M = 8") == ("rollout", "M", 8)


# ---------------------------------------------------------------------------------- unknown keys / types


def test_unknown_key_lists_valid_keys_of_its_section():
    with raises(
        "--set 'rollout.budget=3': unknown key 'rollout.budget'; valid keys in 'rollout': mode, engine, rule, "
        "M, N, Z, k, alpha, beta, tau, temperature, top_p, top_k, max_response_tokens"
    ):
        load_config(overrides=["rollout.budget=3"])


def test_unknown_key_suggests_a_close_name(tmp_path):
    path = write(tmp_path, "rollout:\n  temprature: 0.7\n")
    with raises(f"{path}: unknown key 'rollout.temprature'; valid keys in 'rollout': "):
        load_config(path)
    with raises("(did you mean 'temperature'?)"):
        load_config(path)


def test_unknown_section_lists_valid_sections():
    with raises("unknown section 'optim'; valid sections: model, data, rollout, tools, algo, train"):
        config_from_dict({"optim": {"lr": 1e-5}})
    with raises(
        "--set 'trainer.lr=1': unknown section 'trainer'; valid sections: model, data, rollout, tools, algo, "
        "train (did you mean 'train'?)"
    ):
        load_config(overrides=["trainer.lr=1"])


def test_non_string_key_is_rejected():
    with raises("keys in section 'rollout' must be strings; got 1 (int)"):
        config_from_dict({"rollout": {1: 2}})


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.M=true", "rollout.M: expected int, got True (bool)"),  # bool is not an int
        ("rollout.M=16.0", "rollout.M: expected int, got 16.0 (float)"),  # no silent float -> int
        ("rollout.temperature=hot", "rollout.temperature: expected float, got 'hot' (str)"),
        ("algo.eps=true", "algo.eps: expected float, got True (bool)"),  # bool is not a float
        ("model.path=[a, b]", "model.path: expected str, got ['a', 'b'] (list)"),  # list for str
        ("model.path=3", "model.path: expected str, got 3 (int)"),
        ("train.output_dir=null", "train.output_dir: expected str, got null"),  # null only for Optional
        ("train.bf16=1", "train.bf16: expected bool, got 1 (int)"),
        ("algo.dual_clip=big", "algo.dual_clip: expected float or null, got 'big' (str)"),
        ("data.train=arith", "data.train: expected list[str], got 'arith' (str)"),
        ("data.train=[arith, 3]", "data.train[1]: expected str, got 3 (int)"),  # element-wise
        ("tools.enabled={python: 1}", "tools.enabled: expected list[str], got {'python': 1} (dict)"),
    ],
)
def test_wrong_types_are_rejected_with_the_key(override, message):
    with raises(f"--set {override!r}: {message}"):
        load_config(overrides=[override])


def test_wrong_type_in_python_constructor_is_rejected():
    with raises("rollout.M: expected int, got '16' (str)"):
        RolloutConfig(M="16")  # type: ignore[arg-type]
    with raises("train: expected TrainConfig, got {} (dict)"):
        ARPOConfig(train={})  # type: ignore[arg-type]
    assert RolloutConfig(temperature=1).temperature == 1.0 and isinstance(
        RolloutConfig(temperature=1).temperature, float
    )


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.N=17", "rollout.N: must be in [1, rollout.M] (rollout.M = 16); got 17"),
        ("rollout.N=0", "rollout.N: must be in [1, rollout.M] (rollout.M = 16); got 0"),
        ("rollout.M=0", "rollout.M: must be >= 1; got 0"),
        ("rollout.Z=0", "rollout.Z: must be >= 1; got 0"),
        ("rollout.k=0", "rollout.k: must be in [1, rollout.max_response_tokens] (= 4096); got 0"),
        ("rollout.temperature=0", "rollout.temperature: must be finite and > 0; got 0.0"),
        ("rollout.top_p=1.5", "rollout.top_p: must be in [0, 1]; got 1.5"),
        ("rollout.top_k=-1", "rollout.top_k: must be >= 0 (0 = off); got -1"),
        ("rollout.batch_wait_ms=-1", "rollout.batch_wait_ms: must be finite and >= 0; got -1.0"),
        ("rollout.batch_wait_ms=.inf", "rollout.batch_wait_ms: must be finite and >= 0; got inf"),
        ("rollout.alpha=.nan", "rollout.alpha: must be in [0, 1]; got nan"),
        ("rollout.mode=ppo", "rollout.mode: must be one of 'arpo', 'grpo'; got 'ppo'"),
        ("rollout.engine=vllm", "rollout.engine: must be one of 'hf', 'sglang'; got 'vllm'"),
        ("rollout.rule=always", "rollout.rule: must be one of 'threshold', 'stochastic'; got 'always'"),
        ("algo.credit=medium", "algo.credit: must be one of 'soft', 'hard'; got 'medium'"),
        (
            "algo.estimator=ppo",
            "algo.estimator: must be one of 'grpo', 'drgrpo', 'rloo', 'reinforce_pp'; got 'ppo'",
        ),
        ("algo.kl_type=k3", "algo.kl_type: must be one of 'low_var_kl', 'k1', 'k2'; got 'k3'"),
        (
            "algo.agg=mean",
            "algo.agg: must be one of 'token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum'; got 'mean'",
        ),
        ("algo.dual_clip=1", "algo.dual_clip: must be null or finite and > 1; got 1.0"),
        ("algo.dual_clip=0.5", "algo.dual_clip: must be null or finite and > 1; got 0.5"),
        ("algo.clip_low=-0.1", "algo.clip_low: must be in [0, 1); got -0.1"),
        ("algo.clip_high=-0.1", "algo.clip_high: must be finite and >= 0; got -0.1"),
        ("algo.eps=0", "algo.eps: must be finite and > 0; got 0.0"),
        ("algo.kl_coef=-1", "algo.kl_coef: must be finite and >= 0; got -1.0"),
        ("tools.enabled=[python, web]", "tools.enabled[1]: must be one of 'python', 'search'; got 'web'"),
        (
            "tools.enabled=[python, python]",
            "tools.enabled: must be a list without duplicates; got ['python', 'python']",
        ),
        ("tools.python_timeout_s=0", "tools.python_timeout_s: must be finite and > 0; got 0.0"),
        ("tools.search_url=localhost:8000", "tools.search_url: must be null or an http:// or https:// URL"),
        ("train.zero_stage=4", "train.zero_stage: must be 0, 1, 2 or 3; got 4"),
        ("train.update=tree", "train.update: must be one of 'flat', 'packed'; got 'tree'"),
        ("train.schedule=linear", "train.schedule: must be one of 'cosine', 'constant'; got 'linear'"),
        (
            "train.mini_batch_size=5",
            "train.mini_batch_size: must be a divisor of train.batch_size (= 16); got 5",
        ),
        ("train.lr=0", "train.lr: must be finite and > 0; got 0.0"),
        ("train.loggers=[mlflow]", "train.loggers[0]: must be one of 'tensorboard', 'wandb'; got 'mlflow'"),
        ("data.train=[]", "data.train: must be a non-empty list of task names or files; got []"),
        (
            "data.train=[gsm8k]",
            (
                "data.train[0]: must be an embedded task (arith, kbqa) or a file ending in .parquet or "
                ".jsonl; got 'gsm8k'"
            ),
        ),
        (
            "data.reward=bleu",
            "data.reward: must be one of auto, exact_match, f1, math, format, random or an import path",
        ),
        ("model.dtype=int8", "model.dtype: must be one of 'float32', 'bfloat16', 'float16'; got 'int8'"),
        ("model.lora_r=-1", "model.lora_r: must be >= 0 (0 = full fine-tuning); got -1"),
        ("model.lora_alpha=0", "model.lora_alpha: must be finite and > 0; got 0.0"),
        ("model.lora_alpha=.inf", "model.lora_alpha: must be finite and > 0; got inf"),
        ("model.lora_dropout=1", "model.lora_dropout: must be in [0, 1); got 1.0"),
        ("model.lora_targets=[]", "model.lora_targets: must be a non-empty list of non-empty module names"),
        ("model.lora_targets=[q_proj, '']", "model.lora_targets: must be a non-empty list of non-empty module"),
        (
            "model.lora_targets=[q_proj, q_proj]",
            "model.lora_targets: must be a list without duplicates; got ['q_proj', 'q_proj']",
        ),
    ],
)
def test_validation_errors_name_the_key(override, message):
    with raises(message):
        load_config(overrides=[override])


def test_valid_edge_values_pass():
    cfg = load_config(
        overrides=[
            "rollout.N=16",
            "algo.dual_clip=1.01",
            "algo.clip_high=0.28",
            "train.zero_stage=3",
            "train.zero_stage=0",
            "data.reward=my_pkg.rewards:score",
            "data.train=[data/train.parquet, kbqa]",
            "tools.enabled=[]",
            "rollout.top_p=0",
        ]
    )
    assert cfg.rollout.N == cfg.rollout.M
    assert cfg.algo.dual_clip == 1.01 and cfg.train.zero_stage == 0


def test_cross_section_checks():
    with raises(
        "rollout.token_budget: must be >= data.max_prompt_tokens + rollout.max_response_tokens (= 5632)"
    ):
        load_config(overrides=["rollout.token_budget=4096"])
    with raises("train.micro_batch_tokens: must be >= data.max_prompt_tokens + rollout.max_response_tokens"):
        load_config(overrides=["train.micro_batch_tokens=1024"])
    with raises("train.eval_every: must be 0 when data.test is empty"):
        load_config(overrides=["data.test=[]"])
    assert load_config(overrides=["data.test=[]", "train.eval_every=0"]).data.test == []
    with raises("model.lora_r: LoRA is not supported with train.deepspeed"):
        load_config(overrides=["model.lora_r=8", "train.deepspeed=true"])
    assert load_config(overrides=["model.lora_r=0", "train.deepspeed=true"]).train.deepspeed


def test_lora_keys():
    cfg = load_config(overrides=["model.lora_r=8", "model.lora_alpha=32",
                                 "model.lora_targets=[q_proj, v_proj]", "model.lora_dropout=0.1"])
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_targets, cfg.model.lora_dropout) == (
        8, 32.0, ["q_proj", "v_proj"], 0.1)
    default = load_config().model
    assert default.lora_r == 0 and default.lora_dropout == 0.0  # full fine-tuning unless asked
    assert default.lora_targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                    "down_proj"]


# ------------------------------------------------------------------------------------------- round trip


def test_dump_yaml_round_trips(tmp_path):
    cfg = load_config(
        REPO / "configs" / "demo.yaml",
        [
            "algo.dual_clip=3",
            "algo.eps=1e-8",
            "model.path='1e-6'",
            "model.tokenizer='null'",
            "train.loggers=[wandb]",
            "data.system_prompt='You are an agent.\n\n  Use <python>: yes'",
            "rollout.alpha=0",
        ],
    )
    text = dump_yaml(cfg)
    assert load_config(write(tmp_path, text)) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert "rollout:\n  mode: arpo\n" in text  # sections are block mappings
    assert "  train: [arith, kbqa]\n" in text  # lists inline
    assert load_config(write(tmp_path, dump_yaml(ARPOConfig()), "d.yaml")) == ARPOConfig()


def test_config_to_dict_is_a_deep_copy():
    cfg = ARPOConfig()
    d = config_to_dict(cfg)
    d["data"]["train"].append("kbqa")
    assert cfg.data.train == ["arith"]
    assert list(d) == ["model", "data", "rollout", "tools", "algo", "train"]


def test_lists_given_to_constructors_are_copied():
    train = ["arith"]
    cfg = config_from_dict({"data": {"train": train}})
    train.append("bogus")
    assert cfg.data.train == ["arith"]


# ------------------------------------------------------------------------------------------------ CLI


def test_add_config_args_and_config_from_args(tmp_path):
    parser = add_config_args(argparse.ArgumentParser())
    path = write(tmp_path, "train:\n  total_steps: 7\n")
    args = parser.parse_args(["--config", path, "--set", "rollout.M=8", "--set", "algo.credit=hard"])
    cfg = config_from_args(args)
    assert (cfg.train.total_steps, cfg.rollout.M, cfg.algo.credit) == (7, 8, "hard")
    assert config_from_args(parser.parse_args([])) == ARPOConfig()
    with raises("--set 'rollout.MM=8': unknown key 'rollout.MM'"):
        config_from_args(parser.parse_args(["--set", "rollout.MM=8"]))


def test_sections_construct_alone():
    assert AlgoConfig(clip_high=0.28).clip_high == 0.28
    assert TrainConfig(batch_size=8, mini_batch_size=4).mini_batch_size == 4
    with raises("train.mini_batch_size: must be a divisor of train.batch_size (= 8); got 16"):
        TrainConfig(batch_size=8)


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("rollout:\n  M: 4\n  N: 2\nrollout:\n  M: 8\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'rollout'"):
        load_config(str(path))
    path.write_text("rollout:\n  M: 4\n  M: 8\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'M'"):
        load_config(str(path))


def test_huge_integer_for_a_float_is_a_config_error():
    with pytest.raises(ConfigError, match=r"algo.eps: .* is too large for a float"):
        load_config(None, ["algo.eps=" + "9" * 400])


@pytest.mark.parametrize("text, value", [("010", 10), ("0o20", 16), ("0x10", 16), ("+7", 7)])
def test_integers_read_as_yaml_1_2(text, value):
    assert load_config(None, [f"train.seed={text}"]).train.seed == value


def test_sexagesimal_is_not_an_integer():
    with pytest.raises(ConfigError, match=r"rollout.M: expected int, got '1:00'"):
        load_config(None, ["rollout.M=1:00"])


# ----------------------------------------------------------------------------------------------------------
# tools.custom (a mapping) and as_config (the Python API's config forms)


def test_tools_custom_is_a_checked_mapping():
    from arpo.config import as_config

    cfg = load_config(None, ["tools.custom={calc: mypkg.tools:make_calc}"])
    assert cfg.tools.custom == {"calc": "mypkg.tools:make_calc"}
    assert load_config(None, []).tools.custom == {}
    assert as_config(dump_yaml_roundtrip(cfg)) == cfg
    for override, message in [
        ("tools.custom=[calc]", "tools.custom: expected mapping of str to str, got ['calc'] (list)"),
        ("tools.custom={calc: 3}", "tools.custom.calc: expected str, got 3 (int)"),
        ("tools.custom={calc: not-a-path}", "tools.custom.calc: must be an import path 'package.module:factory'"),
        ("tools.custom={python: a.b:c}", "tools.custom.python: a tool name must be an identifier not in tools.enabled"),
        ("tools.custom={a b: a.b:c}", "tools.custom.a b: a tool name must be an identifier"),
        ("tools.custom_timeout_s=0", "tools.custom_timeout_s: must be finite and > 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])


def dump_yaml_roundtrip(cfg):
    from arpo.config import _yaml_load, dump_yaml

    return _yaml_load(dump_yaml(cfg))


def test_as_config_forms(tmp_path):
    from arpo.config import ARPOConfig, as_config

    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  M: 4\n  N: 2\n")
    base = as_config(path)
    assert (base.rollout.M, base.rollout.N) == (4, 2)
    assert as_config({"rollout": {"M": 4, "N": 2}}) == base == as_config(base)
    assert as_config() == ARPOConfig()
    assert as_config(base, {"train.total_steps": 3}).train.total_steps == 3
    assert as_config(base, ["train.total_steps=3"]).train.total_steps == 3
    for config, overrides, message in [
        (3, (), "config: expected an ARPOConfig, a dict, a YAML path or None; got 3 (int)"),
        (None, {"trainsteps": 3}, "override key 'trainsteps': expected 'section.field'"),
        (None, {"train.steps": 3}, "override 'train.steps': unknown key 'train.steps'"),
        (None, {"rollout.M": "x"}, "rollout.M: expected int, got 'x' (str)"),
        ({"rollout": {"Mx": 1}}, (), "unknown key 'rollout.Mx'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            as_config(config, overrides)
