"""Python sandbox, two revisions side by side in one process: CPU, page faults and wall per call of print(1).

Wall-clock time is unreliable on a shared machine, so each round runs the base revision's sandbox and then this
tree's, alternating, and reports per call: the host process's CPU time, the CPU time of the zygote and of the
call processes it reaped (from /proc: schedstat for the zygote, cutime + cstime for its children), their minor
page faults (copy-on-write faults dominate a call), mean wall time and per-call latency percentiles. The base
revision's python_sandbox.py and _sandbox_child.py are taken from git (``git show REV:path``) and imported as a
separate package; the rest of ``arpo`` is this tree's.

    PYTHONPATH=. python bench/compare_python_sandbox.py --base 1675368 [--calls 63] [--rounds 3] [--threads 1 4]
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("python_sandbox.py", "_sandbox_child.py")


def _import_revision(rev: str, into: str):
    """The sandbox module of git revision `rev`, as package `arpo_sandbox_base` under directory `into`."""
    package = os.path.join(into, "arpo_sandbox_base")
    os.makedirs(package)
    open(os.path.join(package, "__init__.py"), "w").close()
    for name in FILES:
        text = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:arpo/tools/{name}"], check=True,
                              capture_output=True, text=True).stdout
        with open(os.path.join(package, name), "w") as f:
            f.write(text)
    os.chmod(into, 0o755)  # the zygote runs _sandbox_child.py by path
    sys.path.insert(0, into)
    return importlib.import_module("arpo_sandbox_base.python_sandbox")


def _zygote_counters(pid: int) -> tuple[float, int]:
    """(CPU seconds of the zygote and its reaped children, their minor faults)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/schedstat") as f:
        own = int(f.read().split()[0]) / 1e9
    children = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return own + children, int(fields[7]) + int(fields[8])


def _round(sandbox, calls: int, threads: int) -> dict[str, float | list[float]]:
    zygote = sandbox._zygote.proc.pid
    (z_cpu0, z_flt0), host0, wall0 = _zygote_counters(zygote), time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(sandbox, ["print(1)"] * calls))
    wall1, host1, (z_cpu1, z_flt1) = time.perf_counter(), time.process_time(), _zygote_counters(zygote)
    assert all(r.ok and r.text == "1\n" for r in results), results[0]
    return {"host": 1e3 * (host1 - host0) / calls, "tree": 1e3 * (z_cpu1 - z_cpu0) / calls,
            "faults": (z_flt1 - z_flt0) / calls, "wall": 1e3 * (wall1 - wall0) / calls,
            "latency": [1e3 * r.elapsed_s for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. a commit hash)")
    parser.add_argument("--calls", type=int, default=63)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    from arpo.tools import python_sandbox as current
    with tempfile.TemporaryDirectory() as tmp:
        modules = {f"base {args.base}": _import_revision(args.base, tmp), "this tree": current}
        for threads in args.threads:
            sandboxes = {name: module.PythonSandbox(timeout_s=5) for name, module in modules.items()}
            rows = {name: [] for name in modules}
            try:
                for sandbox in sandboxes.values():
                    assert sandbox("print(1)").text == "1\n"  # starts the zygote (not measured)
                for _ in range(args.rounds):
                    for name, sandbox in sandboxes.items():
                        rows[name].append(_round(sandbox, args.calls, threads))
            finally:
                for sandbox in sandboxes.values():
                    sandbox.close()
            print(f"\n{threads} thread(s), {args.calls} calls of print(1) per round, {args.rounds} rounds "
                  f"(isolation: {sorted(sandboxes['this tree'].last_isolation)})")
            for name, runs in rows.items():
                each = lambda key: " ".join(f"{run[key]:6.2f}" for run in runs)
                total = " ".join(f"{run['host'] + run['tree']:6.2f}" for run in runs)
                latency = sorted(x for run in runs for x in run["latency"])
                pick = lambda q: latency[round(q * (len(latency) - 1))]
                print(f"  {name:16s} CPU ms/call: host [{each('host')}] zygote tree [{each('tree')}] "
                      f"total [{total}]; faults/call [{each('faults')}]; wall ms/call [{each('wall')}]; "
                      f"latency ms min {pick(0):.2f} p10 {pick(0.1):.2f} median {pick(0.5):.2f} "
                      f"p90 {pick(0.9):.2f}")


if __name__ == "__main__":
    main()
