"""Print the side-by-side ratios of a pytest-benchmark JSON file: per group, each entry's mean time and its
speed-up over the slowest entry of the same group (all measured in the same run).

    python bench/ratios.py runs/bench/bench.json
"""
import json
import sys
from collections import defaultdict


def ratios(path: str) -> str:
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]].append((b["name"], b["stats"]["mean"]))
    machine = data.get("machine_info", {})
    lines = [f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"python {machine.get('python_version', '?')}"]
    for group, entries in groups.items():
        slowest = max(t for _, t in entries)
        lines.append(f"\n{group}")
        for name, t in sorted(entries, key=lambda e: -e[1]):
            lines.append(f"  {name:<50} {t * 1e3:10.2f} ms   {slowest / t:6.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    print(ratios(sys.argv[1]))
