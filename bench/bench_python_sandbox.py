"""Python sandbox calls: wall and CPU per call of `print(1)`, one at a time and 4 threads x 63 calls.

The old path (a fresh interpreter exec'd per call) no longer exists, so this measures calls/s of the warm-zygote
path only; extra_info adds the CPU per call of the host and of the zygote's process tree (read when the
sandbox is closed and the zygote reaped) and the isolation tokens a call got. Run: pytest
bench/bench_python_sandbox.py --benchmark-only.
"""
import platform
import resource
from concurrent.futures import ThreadPoolExecutor

import pytest

from arpo.tools.python_sandbox import PythonSandbox

CALLS, THREADS = 63, 4


def _cpu_s() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.mark.parametrize("threads", [1, THREADS])
def test_python_sandbox_calls(benchmark, threads):
    sandbox = PythonSandbox(timeout_s=5)
    assert sandbox("print(1)").text == "1\n"  # starts the zygote
    own0, children0 = _cpu_s()
    calls = [0]

    def run():
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(sandbox, ["print(1)"] * CALLS))
        assert all(r.ok and r.text == "1\n" for r in results)
        calls[0] += CALLS

    benchmark.group = f"python sandbox: {CALLS} calls of print(1)"
    benchmark.pedantic(run, rounds=3, iterations=1)
    sandbox.close()  # reaps the zygote: its tree's CPU time (start-up included) lands in RUSAGE_CHILDREN
    own1, children1 = _cpu_s()
    benchmark.extra_info.update({
        "threads": threads, "calls/s": CALLS / benchmark.stats.stats.mean,
        "host_cpu_ms/call": 1e3 * (own1 - own0) / calls[0],
        "zygote_tree_cpu_ms/call": 1e3 * (children1 - children0) / calls[0],
        "isolation": sorted(sandbox.last_isolation), "python": platform.python_version(),
        "cpus": len(__import__("os").sched_getaffinity(0))})
