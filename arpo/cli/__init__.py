"""The `arpo` command: `arpo train | eval | compare | plot | demo | config | index`.

The commands live apart from the library, in this package: the parser and ``main`` here (importing ``arpo.cli``
loads neither torch nor transformers), and the jobs that are more than a call into the library in modules of
their own: ``eval`` (``arpo eval``), ``demo``, ``compare`` and ``plot``. Nothing in the library imports them
(tests/test_layers.py checks it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, add_config_args, config_from_args, describe_config, dump_yaml

_DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
_STUDY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "study.yaml"


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.config is None and _DEMO_CONFIG.exists():
        args.config = str(_DEMO_CONFIG)
    out = run_demo(config_from_args(args), limit=args.limit, greedy=args.greedy)
    return 0 if out["stopped_at"] is None else 130


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train.trainer import run_training

    if args.deepspeed:
        args.overrides = [*args.overrides, "train.deepspeed=true"]
    cfg = config_from_args(args)
    try:
        return run_training(cfg, resume=args.resume)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if isinstance(err, ConfigError):
            raise
        print(f"arpo train: {err}", file=sys.stderr)
        return 2


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import eval_config, format_summary, run_eval

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    cfg = eval_config(config_from_args(args), tasks, args.reward)
    out = args.out or str(Path("runs") / "eval" / Path(args.model.rstrip("/")).name)
    try:
        summary = run_eval(cfg, args.model, n=args.n, temperature=args.temperature, limit=args.limit, out_dir=out,
                           seed=args.seed)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if isinstance(err, ConfigError):
            raise
        print(f"arpo eval: {err}", file=sys.stderr)
        return 2
    mode = "greedy" if summary["greedy"] else f"{args.n} samples at temperature {summary['temperature']}"
    print(f"{args.model} ({mode}, {summary['seconds']:.1f} s)\n{format_summary(summary)}\ntranscripts: {out}/samples.jsonl")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare

    if args.config is None and _STUDY_CONFIG.exists():
        args.config = str(_STUDY_CONFIG)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    run_compare(config_from_args(args), seeds, args.out, arms=arms, control=args.control, samples=args.samples,
                limit=args.limit, m_matched=args.matched_m)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    try:
        paths = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"arpo plot: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    print(describe_config() if args.describe else dump_yaml(config_from_args(args)), end="\n")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from ..tools.search import CorpusError, build_index

    try:
        count = build_index(args.corpus, args.index, progress=True)
    except (CorpusError, OSError) as err:
        print(f"arpo index: {err}", file=sys.stderr)
        return 2
    print(f"indexed {count} passages from {args.corpus} into {args.index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arpo",
        description="ARPO engine: agentic RL with entropy-branched tool-use rollouts, tree-packed updates and "
                    "fused kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a policy with ARPO or GRPO (configs/*.yaml)",
                           epilog="every key: arpo config --describe")
    add_config_args(train)
    train.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                       help="continue a run: from the newest checkpoint in train.output_dir, or from CHECKPOINT")
    train.add_argument("--deepspeed", action="store_true",
                       help="DeepSpeed ZeRO data parallelism (launch with torchrun or deepspeed); "
                            "same as --set train.deepspeed=true")
    train.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    train.set_defaults(func=_cmd_train)
    ev = sub.add_parser("eval", help="evaluate a model on tasks or dataset files (accuracy, pass@k, tool calls)")
    add_config_args(ev)
    ev.add_argument("--model", default="assets/demo-agent", help="model directory (save_pretrained format)")
    ev.add_argument("--tasks", default="arith,kbqa",
                    help="comma-separated embedded tasks (their test split) and/or .parquet / .jsonl files")
    ev.add_argument("--n", type=int, default=1, help="samples per question (pass@k up to k = n)")
    ev.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (default: greedy for --n 1, else rollout.temperature)")
    ev.add_argument("--reward", default=None, help="reward function name (default: data.reward, i.e. auto)")
    ev.add_argument("--limit", type=int, default=0, help="first N questions of each task (0 = all)")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--out", default=None, help="output directory (default: runs/eval/MODEL_NAME)")
    ev.set_defaults(func=_cmd_eval)
    cmp_ = sub.add_parser("compare", help="train ARPO and GRPO with the same budget over several seeds and "
                                          "compare test accuracy, tool executions and rollout cost "
                                          "(configs/study.yaml by default)")
    add_config_args(cmp_)
    cmp_.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    cmp_.add_argument("--arms", default="arpo,arpo-stochastic,grpo,grpo-matched",
                      help="comma-separated arms: arpo (threshold rule), arpo-stochastic, grpo (same M), "
                           "grpo-matched (GRPO with about ARPO's tool executions per prompt), control")
    cmp_.add_argument("--control", action="store_true",
                      help="add the control arm: ARPO on a random reward (data.random_reward_p), same budget")
    cmp_.add_argument("--samples", type=int, default=4, help="samples per test question (T = rollout.temperature)")
    cmp_.add_argument("--matched-m", type=int, default=None,
                      help="M of grpo-matched (default: from the arpo and grpo runs' tool executions)")
    cmp_.add_argument("--out", default="runs/compare", help="directory for the runs and report.md")
    cmp_.add_argument("--limit", type=int, default=0, help="test questions per task in the final evaluation (0 = all)")
    cmp_.set_defaults(func=_cmd_compare)
    plot = sub.add_parser("plot", help="draw a run's metrics.jsonl as PNG charts")
    plot.add_argument("run_dir", help="training run directory (train.output_dir)")
    plot.add_argument("--out", default=None, help="directory for the PNGs (default: RUN_DIR/plots)")
    plot.set_defaults(func=_cmd_plot)
    demo = sub.add_parser("demo", help="the main job: evaluate the demo agent, train it with ARPO, evaluate "
                                       "again, write RUN_DIR/report.md (configs/demo.yaml by default)")
    add_config_args(demo)
    demo.add_argument("--limit", type=int, default=0, help="test questions per task in the evaluations (0 = all)")
    demo.add_argument("--greedy", action="store_true", help="also evaluate greedily (adds time)")
    demo.set_defaults(func=_cmd_demo)
    config = sub.add_parser("config", help="print the resolved config as YAML (after --config and --set)")
    add_config_args(config)
    config.add_argument("--describe", action="store_true", help="list every key with its type, default and help")
    config.set_defaults(func=_cmd_config)
    index = sub.add_parser("index", help="build the SQLite FTS5 (BM25) search index from a JSONL corpus")
    index.add_argument("corpus", help='JSONL file, one {"id", "title", "text"} object per line')
    index.add_argument("index", help="index file to write (replaced atomically when complete)")
    index.set_defaults(func=_cmd_index)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"arpo {args.command}: config error: {err}", file=sys.stderr)
        return 2

