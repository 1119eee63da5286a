"""Print the side-by-side ratios of a pytest-benchmark JSON file: per group, each entry's mean time and its
speed-up over the slowest entry of the same group (all measured in the same run), and its max abs error
against the fp64 reference where the suite measured one. A row that could not run (extra_info "status", e.g.
"not installed: verl", "needs CUDA") is printed with that status in place of a time.

    python bench/ratios.py runs/bench/bench.json
"""
import json
import sys
from collections import defaultdict

ERRORS = ("err_loss", "err_logprobs", "err_entropy", "err_grad")


def status(bench: dict):
    """Why a row has no time (None for a timed row)."""
    return bench.get("extra_info", {}).get("status")


def slowest(entries: list) -> float:
    """The slowest timed mean of a group (nan when none of its rows ran)."""
    return max((b["stats"]["mean"] for b in entries if not status(b)), default=float("nan"))


def errors(info: dict) -> str:
    return ", ".join(f"{k[4:]} {info[k]:.1e}" for k in ERRORS if k in info)


def ratios(path: str) -> str:
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]].append(b)
    machine = data.get("machine_info", {})
    lines = [f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"python {machine.get('python_version', '?')}"]
    for group, entries in groups.items():
        top = slowest(entries)
        lines.append(f"\n{group}")
        for b in sorted(entries, key=lambda b: (bool(status(b)), -b["stats"]["mean"])):
            if status(b):
                lines.append(f"  {b['name']:<50} {status(b)}")
                continue
            t, err = b["stats"]["mean"], errors(b.get("extra_info", {}))
            lines.append(f"  {b['name']:<50} {t * 1e3:10.2f} ms   {top / t:6.1f}x" + (f"   vs fp64: {err}" if err else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    print(ratios(sys.argv[1]))
