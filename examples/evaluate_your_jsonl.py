"""Evaluate a trained checkpoint on your own questions: a JSONL file of {"question": ..., "answer": ...} rows
(or ARPO/verl rows with "prompt", "reward_model", "data_source"), with the agent's tools, greedy, per-sample
transcripts written beside the summary.

    python examples/evaluate_your_jsonl.py --model runs/demo/checkpoints/step_000060/policy \\
        --data my_questions.jsonl --out runs/my_eval

Without --data it writes a small file of arithmetic questions to OUT/questions.jsonl and uses that; without
--model it evaluates the embedded demo agent. The same call from the command line is `arpo eval --model M
--tasks FILE --out OUT`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import arpo


def example_file(path: Path) -> Path:
    """A few questions in the plain QA layout (answers may be a string, an integer or a list of strings)."""
    rows = [{"question": "What is 125 * 911 - 939?", "answer": 112936},
            {"question": "What is 417 * 208 - 655?", "answer": "86081"},
            {"question": "A farmer has 409 crates with 238 eggs each. 363 eggs break. How many eggs are left?",
             "answer": ["96979", "96,979"]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/demo-agent", help="a checkpoint's policy/ directory")
    parser.add_argument("--data", default=None, help="JSONL file of questions (default: a small example file)")
    parser.add_argument("--out", default="runs/my_eval")
    args = parser.parse_args(argv)
    data = args.data or example_file(Path(args.out) / "questions.jsonl")
    summary = arpo.evaluate_checkpoint(args.model, data, overrides={"data.reward": "exact_match"},
                                       out_dir=args.out)
    print(f"{summary['questions']} questions: accuracy {summary['accuracy']:.3f} ± {summary['accuracy_se']:.3f}, "
          f"{summary['tool_executions_per_question']:.2f} tool calls per question; "
          f"transcripts in {Path(args.out) / 'samples.jsonl'}")
    return summary


if __name__ == "__main__":
    main()
