"""PythonSandbox: results, limits and hostile snippets. Every hostile call must come back as a result while
this process survives, no process of the call is left and its working directory is gone. Guarantees that
depend on kernel namespaces are asserted when ``last_isolation`` reports them and skipped otherwise."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from arpo.tools.base import ToolResult
from arpo.tools.python_sandbox import PythonSandbox

MARKER = "\n…[truncated]"


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
    return PythonSandbox(timeout_s=2)


def _processes_in(directory: str) -> list[int]:
    """Live processes whose working directory is ``directory`` (zombies have none and are skipped)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/cwd") == directory:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _assert_cleaned_up(workdirs: list[str]) -> None:
    assert workdirs, "the sandbox made no working directory"
    for workdir in workdirs:
        assert not os.path.exists(workdir)
        assert _processes_in(workdir) == []


def _require(sandbox: PythonSandbox, token: str) -> None:
    if token not in sandbox.last_isolation:
        pytest.skip(f"isolation {token!r} not granted here: {sorted(sandbox.last_isolation)}")


# --- ordinary results ----------------------------------------------------------------------------------

def test_prints_output(sandbox, workdirs):
    result = sandbox("print(6 * 7)")
    assert result == ToolResult("42\n", True, result.elapsed_s, False)
    assert 0 < result.elapsed_s < 2
    _assert_cleaned_up(workdirs)


def test_no_output_is_said():
    assert PythonSandbox(timeout_s=2)("x = 1").text == "(no output)"


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
    sandbox = PythonSandbox(timeout_s=10)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(sandbox, [f"print(sum(range({n})), {n})" for n in range(8)]))
    assert [r.text for r in results] == [f"{sum(range(n))} {n}\n" for n in range(8)]
    assert all(r.ok for r in results)
    assert len(set(workdirs)) == 8
    _assert_cleaned_up(workdirs)


# --- output bound --------------------------------------------------------------------------------------

def test_truncation_keeps_a_bounded_head():
    result = PythonSandbox(timeout_s=2, max_output_bytes=100)("print('é' * 200)")
    assert result.ok and result.truncated
    assert result.text.endswith(MARKER) and result.text.startswith("é" * 50)
    assert len(result.text.encode()) <= 100 + len(MARKER.encode())


def test_error_line_follows_truncated_output():
    result = PythonSandbox(timeout_s=2, max_output_bytes=10)("print('x' * 50); raise SystemExit(2)")
    assert result.text == "x" * 10 + MARKER + "\nError: exit code 2"
    assert result.truncated and not result.ok


def test_ten_megabytes_of_output_is_truncated_quickly(sandbox, workdirs):
    result = sandbox("import sys\nfor _ in range(10): sys.stdout.write('y' * 2**20)\nprint('done')")
    assert result.ok and result.truncated and result.elapsed_s < 1.5
    assert result.text == "y" * 2048 + MARKER
    _assert_cleaned_up(workdirs)


def test_endless_output_times_out(workdirs):
    result = PythonSandbox(timeout_s=1)("while True: print('y' * 1000)")
    assert not result.ok and result.truncated
    assert result.text.endswith(MARKER + "\nError: timed out after 1.0 s")
    assert result.elapsed_s < 2.0
    _assert_cleaned_up(workdirs)


# --- limits and hostile snippets -----------------------------------------------------------------------

def test_infinite_loop_times_out(workdirs):
    result = PythonSandbox(timeout_s=1)("while True: pass")
    assert (result.ok, result.text) == (False, "Error: timed out after 1.0 s")
    assert 1.0 <= result.elapsed_s < 2.0
    _assert_cleaned_up(workdirs)


def test_default_timeout_is_five_seconds(workdirs):
    result = PythonSandbox()("while True: pass")
    assert result.text == "Error: timed out after 5.0 s"
    assert 5.0 <= result.elapsed_s < 6.0
    _assert_cleaned_up(workdirs)


def test_cpu_limit_kills_before_the_timeout(workdirs):
    result = PythonSandbox(timeout_s=5, cpu_s=1)("while True: pass")
    assert not result.ok and "Error: killed by signal SIG" in result.text
    assert result.elapsed_s < 2.5
    _assert_cleaned_up(workdirs)


def test_fork_bomb_is_bounded_and_cleaned_up(workdirs):
    sandbox = PythonSandbox(timeout_s=2, max_processes=16)
    result = sandbox("import os\nwhile True: os.fork()")
    assert not result.ok
    assert "BlockingIOError" in result.text or "timed out" in result.text
    _assert_cleaned_up(workdirs)


def test_huge_allocation_is_a_memory_error(sandbox, workdirs):
    result = sandbox("x = bytearray(10 * 2**30)")
    assert not result.ok and result.text.endswith("MemoryError\nError: exit code 1")
    _assert_cleaned_up(workdirs)


def test_kill_parent_cannot_reach_this_process(sandbox, workdirs):
    result = sandbox("import os, signal\nprint(os.getppid(), flush=True)\n"
                     "os.kill(os.getppid(), signal.SIGKILL)\nprint('still here')")
    assert int(result.text.split()[0]) != os.getpid()  # the parent is the disposable wrapper (or outside: 0)
    if "uid" in sandbox.last_isolation:  # wrapper: another uid, outside the PID namespace
        assert (result.ok, result.text) == (True, "0\nstill here\n")
    else:  # the wrapper dies, which the host reports
        assert not result.ok
        assert result.text.endswith("Error: killed by signal SIGKILL (memory or CPU limit?)")
    _assert_cleaned_up(workdirs)


def test_daemonized_child_dies_with_the_namespace(sandbox, workdirs):
    result = sandbox("import subprocess\n"
                     "subprocess.Popen(['sleep', '10'], start_new_session=True)\nprint('left')")
    assert result.ok and result.text == "left\n"
    _require(sandbox, "pid")
    _assert_cleaned_up(workdirs)


def test_environment_is_scrubbed(sandbox, workdirs, monkeypatch):
    monkeypatch.setenv("ARPO_SANDBOX_SECRET", "s3cr3t-t0ken")
    result = sandbox("import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())")
    assert result.ok and "s3cr3t" not in result.text and "ARPO_SANDBOX_SECRET" not in result.text
    assert result.text == ("['HOME', 'LANG', 'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'PATH', "
                           "'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING', 'TMPDIR']\nTrue\n")
    _assert_cleaned_up(workdirs)


def test_other_processes_environ_is_unreadable(sandbox, monkeypatch):
    monkeypatch.setenv("ARPO_SANDBOX_SECRET", "s3cr3t-t0ken")
    code = ("import os\nfound = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: found += [pid] if b's3cr3t' in open(f'/proc/{pid}/environ', 'rb').read() else []\n"
            "    except OSError: pass\n"
            "print(found, sorted(filter(str.isdigit, os.listdir('/proc'))))")
    result = sandbox(code)
    _require(sandbox, "fs")  # a fresh /proc of the snippet's own PID namespace
    assert (result.ok, result.text) == (True, "[] ['1']\n")


def test_working_directory_is_fresh_and_removed(sandbox, workdirs):
    result = sandbox("import os\nprint(os.getcwd(), os.listdir('.'))\nopen('made.txt', 'w').write('x')")
    assert result.ok and result.text == f"{workdirs[0]} ['snippet.py']\n"
    _assert_cleaned_up(workdirs)


def test_private_temp_root_works(workdirs, tmp_path, monkeypatch):
    tmp_path.chmod(0o700)  # a TMPDIR others cannot search must not break the unprivileged snippet
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = PythonSandbox(timeout_s=2)("import os; print(os.getcwd())")
    assert result.ok and result.text == f"{workdirs[0]}\n" and workdirs[0].startswith(str(tmp_path))
    _assert_cleaned_up(workdirs)


def test_host_death_kills_the_sandbox(tmp_path):
    host_code = ("import sys, tempfile\ntempfile.tempdir = sys.argv[1]\n"
                 "from arpo.tools.python_sandbox import PythonSandbox\n"
                 "PythonSandbox(timeout_s=60)('import time; time.sleep(60)')")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    host = subprocess.Popen([sys.executable, "-c", host_code, str(tmp_path)], env=env)
    try:
        workdir = _wait_for(lambda: [str(p) for p in tmp_path.iterdir() if _processes_in(str(p))])[0]
    finally:
        host.kill()
        host.wait()
    assert _wait_for(lambda: _processes_in(workdir) == []), _processes_in(workdir)


def _wait_for(condition, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_file_size_limit(workdirs):
    sandbox = PythonSandbox(timeout_s=2, max_file_bytes=2**20)
    result = sandbox("open('big', 'wb').write(b'x' * 2 * 2**20)")
    assert not result.ok and "File too large" in result.text
    _assert_cleaned_up(workdirs)


def test_working_directory_total_size_is_bounded():
    sandbox = PythonSandbox(timeout_s=2, max_file_bytes=2**20)
    result = sandbox("for i in range(8): open(f'part{i}', 'wb').write(b'x' * 2**19)")
    _require(sandbox, "fs")  # the working directory is a tmpfs of max_file_bytes
    assert not result.ok and "No space left on device" in result.text


def test_cannot_write_outside_its_directory(sandbox, tmp_path):
    name = f"arpo-escape-{os.getpid()}"
    targets = [tmp_path / "escape.txt", f"/tmp/{name}", f"/dev/shm/{name}"]
    code = (f"for path in {[str(t) for t in targets]!r}:\n"
            "    try: open(path, 'w').write('x'); print('wrote', path)\n"
            "    except OSError as e: print(e.strerror)\n")
    result = sandbox(code)
    _require(sandbox, "fs")
    assert result.ok and len(result.text.splitlines()) == 3
    assert set(result.text.splitlines()) <= {"Read-only file system", "Permission denied"}
    assert not any(os.path.exists(t) for t in targets)


def test_network_is_unreachable(sandbox):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = sandbox(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                         "print('connected')")
        _require(sandbox, "net")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert not result.ok and "connected" not in result.text
    assert "OSError: [Errno 101] Network is unreachable" in result.text


def test_isolation_tokens_are_known(sandbox):
    sandbox("pass")
    assert sandbox.last_isolation <= {"net", "pid", "ipc", "fs", "uid", "userns"}
    assert "uid" not in sandbox.last_isolation or "fs" in sandbox.last_isolation


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


def test_elapsed_covers_the_call(sandbox):
    start = time.monotonic()
    result = sandbox("import time; time.sleep(0.3)")
    assert result.ok and 0.3 <= result.elapsed_s <= time.monotonic() - start
