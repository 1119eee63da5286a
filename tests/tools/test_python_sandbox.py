"""PythonSandbox: results, limits and hostile snippets. Every hostile call must come back as a result while
this process survives, no process or cgroup of the call is left and its working directory is gone.

Ordinary results and rlimits are tested with ``require_isolation=False`` (they hold in every mode). Hostile
snippets run with the default policy and assert the documented outcome of the mode ``last_isolation``
reports: the refusal ("sandbox unavailable") where the policy is not met, else what each granted token
guarantees (or, where a token is missing, the documented weaker outcome). Modes this host lacks are produced
by a bootstrap whose unshare() fails on purpose, run in a private mount namespace (``unshare -m``) so that
even a regression cannot touch this host's mounts."""
from __future__ import annotations

import functools
import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import arpo.tools.python_sandbox as python_sandbox
from arpo.tools.base import ToolResult
from arpo.tools.python_sandbox import PythonSandbox

# an interpreter (or venv) under /tmp keeps the host's /tmp visible: the sandbox then mounts its tmpfs on the
# call's own directory instead of /tmp (python_sandbox docstring), so paths inside differ
_PYTHON_UNDER_TMP = any(os.path.abspath(p).startswith("/tmp/") or os.path.realpath(p).startswith("/tmp/")
                        for p in (sys.executable, sys.prefix, sys.base_prefix))

MARKER = "\n…[truncated]"
UNAVAILABLE = "Error: python sandbox unavailable: "
UNAVAILABLE_END = " (set tools.python_require_isolation=false to run with rlimits only)"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Sandbox = functools.partial(PythonSandbox, require_isolation=False)  # limits and results, in every mode


@pytest.fixture
def workdirs(monkeypatch) -> list[str]:
    """The working directories the sandbox creates, in order."""
    made, mkdtemp = [], tempfile.mkdtemp

    def record(*args, **kwargs):
        made.append(os.path.realpath(mkdtemp(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", record)
    return made


@pytest.fixture(scope="module")
def sandbox() -> PythonSandbox:
    return Sandbox(timeout_s=2)


@pytest.fixture(scope="module")
def strict() -> PythonSandbox:
    return PythonSandbox(timeout_s=2)


def _processes_of(workdir: str) -> list[int]:
    """Live processes of the call that owns ``workdir``: its working directory is theirs, or their mount
    namespace holds the call's tmpfs (whose source is the directory's name). Zombies have neither."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                mounts = f.read()
            if os.readlink(f"/proc/{entry}/cwd") == workdir or f" {os.path.basename(workdir)} " in mounts:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _cgroups_of(pid: int) -> list[str]:
    """The sandbox cgroups a host process ``pid`` made that still exist."""
    parents = python_sandbox._own_cgroups().values()
    return [e for p in parents for e in os.listdir(p) if e.startswith(f"arpo-py-{pid}-")]


def _assert_cleaned_up(workdirs: list[str]) -> None:
    assert workdirs, "the sandbox made no working directory"
    for workdir in workdirs:
        assert not os.path.exists(workdir)
        assert _processes_of(workdir) == []
    assert _cgroups_of(os.getpid()) == []


def _refused(sandbox: PythonSandbox, result: ToolResult) -> bool:
    """Whether the isolation policy refused the call (checked to be the documented result either way)."""
    granted = sandbox.last_isolation
    if "pid" in granted and granted & {"fs", "uid"}:
        assert not result.text.startswith(UNAVAILABLE)
        return False
    assert not result.ok and result.text.startswith(UNAVAILABLE) and result.text.endswith(UNAVAILABLE_END)
    return True


# --- ordinary results ----------------------------------------------------------------------------------

def test_prints_output(sandbox, workdirs):
    result = sandbox("print(6 * 7)")
    assert result == ToolResult("42\n", True, result.elapsed_s, False)
    assert 0 < result.elapsed_s < 2
    _assert_cleaned_up(workdirs)


def test_no_output_is_said():
    assert Sandbox(timeout_s=2)("x = 1").text == "(no output)"


@pytest.mark.parametrize("code, ok, line", [
    ("import sys; sys.exit(0)", True, "(no output)"),
    ("import sys; print('bye'); sys.exit(3)", False, "bye\nError: exit code 3"),
])
def test_exit_codes(sandbox, code, ok, line):
    result = sandbox(code)
    assert (result.ok, result.text) == (ok, line)


def test_exception_gives_traceback_and_exit_code(sandbox):
    result = sandbox("print('before')\n1 / 0")
    assert not result.ok
    assert result.text.startswith("before\nTraceback (most recent call last):")
    assert result.text.endswith("ZeroDivisionError: division by zero\nError: exit code 1")


def test_missing_module(sandbox):
    result = sandbox("import no_such_module_xyz")
    assert not result.ok and "ModuleNotFoundError: No module named 'no_such_module_xyz'" in result.text


GARBAGE = [bytes(range(256)).decode("latin-1"), "print(1)\x00print(2)", "print('\ud800')"]


@pytest.mark.parametrize("code", GARBAGE, ids=["latin1-garbage", "nul-bytes", "lone-surrogate"])
def test_garbage_code_is_an_error_result(sandbox, code):
    result = sandbox(code)
    assert not result.ok
    assert "SyntaxError" in result.text or "ValueError" in result.text
    assert result.text.endswith("Error: exit code 1")


def test_invalid_utf8_output_is_replaced(sandbox):
    result = sandbox("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe')")
    assert result.ok and result.text == "ok \ufffd\ufffd"


def test_stdout_and_stderr_are_merged_in_order(sandbox):
    code = "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\nprint('c')"
    assert sandbox(code).text == "a\nb\nc\n"


def test_interpreter_packages_are_importable(sandbox):
    numpy = pytest.importorskip("numpy")
    result = sandbox("import numpy; print(numpy.__version__)")
    assert result.ok and result.text == f"{numpy.__version__}\n"


def test_concurrent_calls_return_their_own_results(workdirs):
    sandbox = Sandbox(timeout_s=10)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(sandbox, [f"print(sum(range({n})), {n})" for n in range(8)]))
    assert [r.text for r in results] == [f"{sum(range(n))} {n}\n" for n in range(8)]
    assert all(r.ok for r in results)
    assert len(set(workdirs)) == 8
    _assert_cleaned_up(workdirs)


# --- output bound --------------------------------------------------------------------------------------

def test_truncation_keeps_a_bounded_head():
    result = Sandbox(timeout_s=2, max_output_bytes=100)("print('é' * 200)")
    assert result.ok and result.truncated
    assert result.text.endswith(MARKER) and result.text.startswith("é" * 50)
    assert len(result.text.encode()) <= 100 + len(MARKER.encode())


def test_error_line_follows_truncated_output():
    result = Sandbox(timeout_s=2, max_output_bytes=10)("print('x' * 50); raise SystemExit(2)")
    assert result.text == "x" * 10 + MARKER + "\nError: exit code 2"
    assert result.truncated and not result.ok


def test_ten_megabytes_of_output_is_truncated_quickly(sandbox, workdirs):
    result = sandbox("import sys\nfor _ in range(10): sys.stdout.write('y' * 2**20)\nprint('done')")
    assert result.ok and result.truncated and result.elapsed_s < 1.5
    assert result.text == "y" * 2048 + MARKER
    _assert_cleaned_up(workdirs)


def test_endless_output_times_out(workdirs):
    result = Sandbox(timeout_s=1)("while True: print('y' * 1000)")
    assert not result.ok and result.truncated
    assert result.text.endswith(MARKER + "\nError: timed out after 1.0 s")
    assert result.elapsed_s < 2.0
    _assert_cleaned_up(workdirs)


# --- limits and hostile snippets -----------------------------------------------------------------------

def test_infinite_loop_times_out(workdirs):
    result = Sandbox(timeout_s=1)("while True: pass")
    assert (result.ok, result.text) == (False, "Error: timed out after 1.0 s")
    assert 1.0 <= result.elapsed_s < 2.0
    _assert_cleaned_up(workdirs)


def test_default_timeout_is_five_seconds(workdirs):
    result = Sandbox()("while True: pass")
    assert result.text == "Error: timed out after 5.0 s"
    assert 5.0 <= result.elapsed_s < 6.0
    _assert_cleaned_up(workdirs)


def test_cpu_limit_kills_before_the_timeout(workdirs):
    result = Sandbox(timeout_s=10, cpu_s=1)("while True: pass")  # 1 s of CPU: more wall time on a busy host
    assert not result.ok and "Error: killed by signal SIG" in result.text
    assert result.elapsed_s < 10
    _assert_cleaned_up(workdirs)


def test_fork_bomb_is_bounded_and_cleaned_up(workdirs):
    sandbox = Sandbox(timeout_s=2, max_processes=16)
    result = sandbox("import os\nwhile True: os.fork()")
    assert not result.ok
    assert "BlockingIOError" in result.text or "timed out" in result.text
    _assert_cleaned_up(workdirs)


def test_huge_allocation_is_a_memory_error(sandbox, workdirs):
    result = sandbox("x = bytearray(10 * 2**30)")
    assert not result.ok and result.text.endswith("MemoryError\nError: exit code 1")
    _assert_cleaned_up(workdirs)


def test_kill_parent_cannot_reach_this_process(strict, workdirs):
    result = strict("import os, signal\nprint(os.getppid(), flush=True)\n"
                    "os.kill(os.getppid(), signal.SIGKILL)\nprint('still here')")
    if not _refused(strict, result):
        assert int(result.text.split()[0]) == 0  # "pid": the parent is outside the namespace
        if "uid" in strict.last_isolation:  # 0 is its own process group: the root wrapper is out of reach
            assert (result.ok, result.text) == (True, "0\nstill here\n")
        else:  # the wrapper (same uid) dies, which the host reports
            assert not result.ok
            assert result.text.endswith("Error: killed by signal SIGKILL (memory or CPU limit?)")
    _assert_cleaned_up(workdirs)


def test_daemonized_child_dies_with_the_namespace(strict, workdirs):
    result = strict("import subprocess\n"
                    "subprocess.Popen(['sleep', '10'], start_new_session=True)\nprint('left')")
    if not _refused(strict, result):
        assert result.ok and result.text == "left\n"
    _assert_cleaned_up(workdirs)  # "pid": the namespace's teardown kills it (and "cgroup" would too)


def test_environment_is_scrubbed(sandbox, workdirs, monkeypatch):
    monkeypatch.setenv("ARPO_SANDBOX_SECRET", "s3cr3t-t0ken")
    result = sandbox("import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())")
    assert result.ok and "s3cr3t" not in result.text and "ARPO_SANDBOX_SECRET" not in result.text
    assert result.text == ("['HOME', 'LANG', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', "
                           "'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING', 'TMPDIR']\nTrue\n")
    _assert_cleaned_up(workdirs)


def test_other_processes_environ_is_unreadable(strict, monkeypatch):
    monkeypatch.setenv("ARPO_SANDBOX_SECRET", "s3cr3t-t0ken")
    code = ("import os\nfound = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: found += [pid] if b's3cr3t' in open(f'/proc/{pid}/environ', 'rb').read() else []\n"
            "    except OSError: pass\n"
            "print(found, sorted(filter(str.isdigit, os.listdir('/proc'))) == ['1'])")
    result = strict(code)
    if not _refused(strict, result):  # "fs": a fresh /proc of its own PID namespace; "uid": others' is denied
        assert (result.ok, result.text) == (True, f"[] {'fs' in strict.last_isolation}\n")


def test_working_directory_is_fresh_and_removed(sandbox, workdirs):
    result = sandbox("import os\nprint(os.getcwd(), os.listdir('.'))\nopen('made.txt', 'w').write('x')")
    assert result.ok and result.text == "/tmp ['snippet.py']\n"  # the call's directory shows as /tmp
    _assert_cleaned_up(workdirs)


def test_private_temp_root_works(workdirs, tmp_path, monkeypatch):
    tmp_path.chmod(0o700)  # a TMPDIR others cannot search must not break the unprivileged snippet
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sandbox = Sandbox(timeout_s=2)
    result = sandbox("import os; print(os.getcwd())")
    assert workdirs[0].startswith(str(tmp_path))
    if "fs" in sandbox.last_isolation or "uid" not in sandbox.last_isolation:
        assert result.ok and result.text == "/tmp\n"
    else:  # documented: without "fs" the call's uid cannot reach a working directory under a private root
        assert not result.ok and "PermissionError" in result.text
    _assert_cleaned_up(workdirs)


def test_same_failing_code_gives_the_same_text(sandbox, workdirs):
    first, second = sandbox("x = 1\n1 / 0"), sandbox("x = 1\n1 / 0")
    assert not first.ok and 'File "/tmp/snippet.py", line 2, in <module>' in first.text
    assert first.text == second.text  # the random per-call directory never shows
    assert workdirs[0] != workdirs[1] and workdirs[0] not in first.text


def test_host_death_kills_the_sandbox(tmp_path):
    host_code = ("import sys, tempfile\ntempfile.tempdir = sys.argv[1]\n"
                 "from arpo.tools.python_sandbox import PythonSandbox\n"
                 "PythonSandbox(timeout_s=60, require_isolation=False)('import time; time.sleep(60)')")
    host = subprocess.Popen([sys.executable, "-c", host_code, str(tmp_path)], env=_env())
    try:
        workdir = _wait_for(lambda: [str(p) for p in tmp_path.iterdir() if _processes_of(str(p))])[0]
    finally:
        host.kill()
        host.wait()
    assert _wait_for(lambda: _processes_of(workdir) == []), _processes_of(workdir)
    Sandbox(timeout_s=2)("pass")  # the next call removes the cgroup the dead host left
    assert _cgroups_of(host.pid) == []


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT}


def _wait_for(condition, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_file_size_limit(workdirs):
    sandbox = Sandbox(timeout_s=2, max_file_bytes=2**20)
    result = sandbox("open('big', 'wb').write(b'x' * 2 * 2**20)")
    assert not result.ok and "File too large" in result.text
    _assert_cleaned_up(workdirs)


def test_working_directory_total_size_is_bounded():
    sandbox = PythonSandbox(timeout_s=2, max_file_bytes=2**20)
    result = sandbox("for i in range(8): open(f'part{i}', 'wb').write(b'x' * 2**19)")
    if _refused(sandbox, result):
        return
    if "fs" in sandbox.last_isolation:  # the working directory is a tmpfs of max_file_bytes
        assert not result.ok and "No space left on device" in result.text
    else:  # documented: only each file is bounded
        assert result.ok


def test_cannot_write_outside_its_directory(strict, tmp_path):
    name = f"arpo-escape-{os.getpid()}"
    shared = [f"/tmp/{name}", f"/dev/shm/{name}"]  # world-writable on the host
    code = (f"for path in {[str(tmp_path / 'escape.txt'), *shared]!r}:\n"
            "    try: open(path, 'w').write('x'); print('wrote', path)\n"
            "    except OSError as e: print(e.strerror)\n")
    try:
        result = strict(code)
        if not _refused(strict, result):
            assert result.ok and len(result.text.splitlines()) == 3
            assert not (tmp_path / "escape.txt").exists()  # "fs": hidden or read-only; "uid": not its own
            assert not any(map(os.path.exists, shared)) or "fs" not in strict.last_isolation
    finally:
        for path in shared:
            if os.path.exists(path):
                os.unlink(path)


def test_network_is_unreachable(strict):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = strict(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                        "print('connected')")
        server.setblocking(False)
        if _refused(strict, result):
            return
        if "net" not in strict.last_isolation:  # documented: not isolated
            assert (result.ok, result.text) == (True, "connected\n")
            return
        with pytest.raises(BlockingIOError):
            server.accept()
    assert not result.ok and "connected" not in result.text
    assert "OSError: [Errno 101] Network is unreachable" in result.text


# --- total memory (cgroup) -----------------------------------------------------------------------------

CHILDREN = """import os, resource, time
print(resource.getrlimit(resource.RLIMIT_NPROC))
pids = []
for _ in range({n}):
    pid = os.fork()
    if pid == 0:
        held = b'x' * ({mb} * 2**20)  # written, so resident
        time.sleep(1)
        os._exit(0)
    pids.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in pids]
print(statuses)
raise SystemExit(any(statuses))
"""


def test_total_memory_of_all_processes_is_bounded(workdirs):
    sandbox = Sandbox(timeout_s=5, memory_mb=300)
    result = sandbox(CHILDREN.format(n=4, mb=250))  # 1000 MB in all, 250 MB each
    if "cgroup" in sandbox.last_isolation:  # the OOM killer SIGKILLs some of them
        lines = result.text.splitlines()
        assert not result.ok and lines[0] == "(64, 64)"
        assert "SIGKILL" in result.text or signal.SIGKILL in ast.literal_eval(lines[1])
    else:  # documented: memory_mb bounds each process only
        assert result.ok and result.text.startswith("(16, 16)\n")
    _assert_cleaned_up(workdirs)


def test_without_a_cgroup_only_each_process_is_bounded(workdirs, monkeypatch):
    monkeypatch.setattr(python_sandbox._Cgroup, "create", classmethod(lambda cls, *args: None))
    sandbox = Sandbox(timeout_s=5, memory_mb=100)
    result = sandbox(CHILDREN.format(n=3, mb=80))  # 240 MB in all: within memory_mb x max_processes
    assert "cgroup" not in sandbox.last_isolation
    assert (result.ok, result.text) == (True, "(16, 16)\n[0, 0, 0]\n")  # the smaller default max_processes
    _assert_cleaned_up(workdirs)


def test_isolation_tokens_are_known(sandbox):
    sandbox("pass")
    assert sandbox.last_isolation <= {"cgroup", "net", "pid", "ipc", "fs", "uid", "userns"}
    assert not {"uid", "userns"} <= sandbox.last_isolation


# --- modes this host may lack: unshare() fails on purpose, inside a private mount namespace -------------

NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
ALL = NEWNS | NEWIPC | NEWUSER | NEWPID | NEWNET

# argv[1]: JSON scenarios; prints per scenario whether the mount namespace is still as at the start, the
# warnings logged, the isolation and the results.
HARNESS = r"""
import json, logging, os, sys
import arpo.tools.python_sandbox as m
path = "/proc/self/mountinfo"
mounts = lambda: open(path).read() if os.path.exists(path) else "unreadable"
warnings, out, before = [], [], mounts()
m.log.addHandler(type("Collect", (logging.Handler,), {"emit": lambda self, r: warnings.append(r)})())
for i, scenario in enumerate(json.loads(sys.argv[1])):
    child = os.path.join(sys.argv[2], f"child{i}.py")
    with open(child, "w") as f:
        f.write(scenario["bootstrap"])
    m._CHILD, logged = child, len(warnings)
    try:
        sandbox = m.PythonSandbox(**scenario["kwargs"])
        results = [sandbox(code) for code in scenario["codes"]]
        out.append({"same_mounts": mounts() == before, "warnings": len(warnings) - logged,
                    "isolation": sorted(sandbox.last_isolation),
                    "results": [[r.ok, r.text] for r in results]})
    except Exception as e:  # e.g. a regression mounted over this namespace's /proc or /tmp
        out.append({"same_mounts": False, "error": repr(e)})
print(json.dumps(out))
"""


def _failing(flags: int) -> str:
    """The bootstrap with unshare() failing for these namespace flags."""
    bootstrap = python_sandbox._CHILD.read_text(encoding="utf-8")
    assert bootstrap.endswith("\nmain()\n")
    return bootstrap[: -len("main()\n")] + (
        f"real_unshare = try_unshare\ntry_unshare = lambda flag: not flag & {flags} and real_unshare(flag)\n"
        "main()\n")


def _world_reachable(path: str) -> bool:
    real, dirs = os.path.realpath(path), []
    while (parent := os.path.dirname(dirs[-1] if dirs else real)) != (dirs[-1] if dirs else real):
        dirs.append(parent)
    return all(os.stat(p).st_mode & 0o001 for p in [real, *dirs])


def _mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


@pytest.fixture(scope="module")
def faked(tmp_path_factory) -> dict:
    """Results of the scenarios below, run by HARNESS under `unshare -m --propagation private`."""
    python = next((p for p in (sys.executable, "/usr/bin/python3") if _world_reachable(p)), None)
    if os.geteuid() != 0 or not shutil.which("unshare") or python is None:
        pytest.skip("needs root, unshare(1) and an interpreter any uid can run")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is refused here")
    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    marker = f"/tmp/arpo-refused-{os.getpid()}"
    escape = ("import os\nprint(os.getuid() != 0)\n"
              f"try: open({str(private / 'x')!r}, 'w')\nexcept OSError as e: print(e.strerror)\n")
    best_effort = ("import os, subprocess\nprint(os.getuid() != 0)\n"
                   "try: os.kill(os.getppid(), 9)\nexcept OSError as e: print(e.strerror)\n"
                   "argv = open(f'/proc/{os.getppid()}/cmdline', 'rb').read()\n"
                   "print(len(argv.split(b'\\0')), argv.split(b'\\0')[4].isdigit(), b'/sys/' in argv)\n"
                   "subprocess.Popen(['sleep', '37.25'], start_new_session=True)\n")
    scenarios = {
        "no_mnt": (NEWNS, True, [escape]),
        "no_pid": (NEWPID | NEWUSER, True, ["print('ran')", "print('ran')"]),
        "none_required": (ALL, True, [f"open({marker!r}, 'w')"]),
        "none_best_effort": (ALL, False, [best_effort]),
    }
    config = [{"bootstrap": _failing(flags), "codes": codes,
               "kwargs": {"timeout_s": 5, "python": python, "require_isolation": require}}
              for flags, require, codes in scenarios.values()]
    before = _mountinfo()
    children = tmp_path_factory.mktemp("children")
    run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", HARNESS,
                          json.dumps(config), str(children)], capture_output=True, text=True, env=_env(), timeout=60)
    assert run.returncode == 0, run.stderr
    assert _mountinfo() == before  # this host's mounts, whatever the harness did
    results = dict(zip(scenarios, json.loads(run.stdout)))
    results["marker_written"] = os.path.exists(marker)
    return results


@pytest.mark.parametrize("scenario", ["no_mnt", "no_pid", "none_required", "none_best_effort"])
def test_failed_mount_namespace_never_touches_mounts(faked, scenario):
    assert faked[scenario]["same_mounts"]


def test_without_a_mount_namespace_the_snippet_runs_as_its_own_uid(faked):
    result = faked["no_mnt"]
    assert result["isolation"] == ["cgroup", "ipc", "net", "pid", "uid"] and result["warnings"] == 0
    assert result["results"] == [[True, "True\nPermission denied\n"]]


def test_without_a_pid_namespace_calls_are_refused_and_warned_once(faked):
    result = faked["no_pid"]
    assert result["isolation"] == ["cgroup", "fs", "ipc", "net", "uid"] and result["warnings"] == 1
    assert result["results"] == [[False, f"{UNAVAILABLE}no PID namespace{UNAVAILABLE_END}"]] * 2


def test_without_namespaces_no_code_runs(faked):
    result = faked["none_required"]
    assert result["isolation"] == ["cgroup", "uid"] and result["warnings"] == 1
    assert result["results"] == [[False, f"{UNAVAILABLE}no PID namespace{UNAVAILABLE_END}"]]
    assert not faked["marker_written"]


def test_best_effort_without_namespaces_drops_root_and_cleans_up(faked):
    result = faked["none_best_effort"]
    assert result["isolation"] == ["cgroup", "uid"] and result["warnings"] == 1
    # the wrapper's command line is `python -I -S CHILD FD`: no config, no host pid, no cgroup path
    assert result["results"] == [[True, "True\nOperation not permitted\n6 True False\n"]]
    assert b"sleep\x0037.25\x00" not in map(_cmdline, filter(str.isdigit, os.listdir("/proc")))


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


# --- construction --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, arg", [
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": -1.0}, "timeout_s"),
    ({"timeout_s": float("nan")}, "timeout_s"), ({"timeout_s": float("inf")}, "timeout_s"),
    ({"memory_mb": 0}, "memory_mb"), ({"memory_mb": 0.5}, "memory_mb"),
    ({"max_output_bytes": 0}, "max_output_bytes"), ({"cpu_s": 0}, "cpu_s"),
    ({"max_file_bytes": -5}, "max_file_bytes"),
    ({"max_processes": 0}, "max_processes"), ({"python": "/no/such/python"}, "python"),
])
def test_constructor_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        PythonSandbox(**kwargs)


def test_defaults():
    sandbox = PythonSandbox()
    assert (sandbox.name, sandbox.timeout_s, sandbox.max_output_bytes) == ("python", 5.0, 2048)
    assert (sandbox.memory_mb, sandbox.max_processes, sandbox.require_isolation) == (1024, None, True)


def test_elapsed_covers_the_call(sandbox):
    start = time.monotonic()
    result = sandbox("import time; time.sleep(0.3)")
    assert result.ok and 0.3 <= result.elapsed_s <= time.monotonic() - start


# --- the warm zygote ------------------------------------------------------------------------------------

def _zygote_pid(sandbox: PythonSandbox) -> int:
    return sandbox._zygote.proc.pid


def test_zygote_is_reused_replaced_when_dead_and_closed(workdirs):
    sandbox = Sandbox(timeout_s=5)
    assert sandbox("print(1)").text == "1\n"
    first = _zygote_pid(sandbox)
    assert sandbox("print(2)").text == "2\n" and _zygote_pid(sandbox) == first
    os.kill(first, signal.SIGKILL)
    assert _wait_for(lambda: not python_sandbox._alive(first) or _is_zombie(first))
    assert sandbox("print(3)").text == "3\n" and _zygote_pid(sandbox) != first  # replaced transparently
    second = sandbox._zygote.proc
    sandbox.close()
    assert second.returncode is not None  # stopped and reaped
    assert sandbox("print(4)").text == "4\n"  # a new one on demand
    sandbox.close()
    _assert_cleaned_up(workdirs)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_snippet_runs_as_a_fresh_script(sandbox):
    code = ("import sys\nprint(__name__, __file__, sys.argv, sys.orig_argv[1:], sorted(globals()))\n"
            "print(sys.flags.isolated, sys.flags.utf8_mode, sys.flags.no_site, sys.dont_write_bytecode)")
    result = sandbox(code)
    assert result.ok and result.text == (
        "__main__ /tmp/snippet.py ['snippet.py'] ['-I', '-B', '-X', 'utf8', 'snippet.py'] ['__annotations__', "
        "'__builtins__', '__cached__', '__doc__', '__file__', '__loader__', '__name__', '__package__', "
        "'__spec__', 'sys']\n1 1 0 True\n")


@pytest.mark.parametrize("code, ok, text", [
    ("import sys; sys.exit('bye')", False, "bye\nError: exit code 1"),
    ("raise SystemExit(256 + 7)", False, "Error: exit code 7"),
    ("raise KeyboardInterrupt", False, "Traceback (most recent call last):\n  File \"/tmp/snippet.py\", line 1, "
     "in <module>\n    raise KeyboardInterrupt\nKeyboardInterrupt\nError: exit code 130"),
    ("import atexit, threading, time\natexit.register(print, 'atexit')\n"
     "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()", True, "thread\natexit\n"),
    ("class A:\n    def __del__(self): print('del')\na = A()", True, "del\n"),
    ("import sys; sys.stdout.write('no newline')", True, "no newline"),
])
def test_exit_is_the_interpreters(sandbox, code, ok, text):
    result = sandbox(code)
    assert (result.ok, result.text) == (ok, text)


def test_no_capabilities_and_no_status_pipe(strict):
    result = strict("import os\nprint([l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')])\n"
                    "try: os.write(3, b'fs uid ')\nexcept OSError as e: print(e.strerror)")
    if not _refused(strict, result):
        assert (result.ok, result.text) == (True, f"{['0' * 16] * 5}\nBad file descriptor\n")


def test_hash_salt_is_per_zygote_not_per_call():
    """Documented: calls of one sandbox share the zygote's str hash salt; another sandbox has its own."""
    first, second = Sandbox(timeout_s=5), Sandbox(timeout_s=5)
    code = "print(hash('arpo'))"
    try:
        assert first(code).text == first(code).text != second(code).text
    finally:
        first.close()
        second.close()
