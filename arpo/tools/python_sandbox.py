"""Sandboxed Python interpreter tool: run a model-written snippet in a fresh, limited, throwaway process.

Linux only. One call::

    host ─Popen─▶ wrapper  `python -I -S -c _BOOTSTRAP`: own session and process group, scrubbed environment;
                   │       unshare(NEWNS|NEWPID|NEWNET|NEWIPC), inside a new user namespace when not root
                   └─fork─▶ init  PID 1 of the new PID namespace: private filesystem view, drops privileges,
                                  sets rlimits, execs `python -I -B -X utf8 snippet.py` (the user code)

The code travels in ``snippet.py`` inside a fresh ``tempfile.mkdtemp`` directory (never on the command line),
which is the snippet's working directory, HOME and TMPDIR, and is deleted after the call. stdout and stderr
share one pipe (they interleave as on a terminal); the host keeps the first ``max_output_bytes`` and discards
the rest while draining, so unbounded output never reaches host memory. The wall-clock timeout covers the
whole call; afterwards (timeout or not) the wrapper's process group is SIGKILLed.

Always enforced:
- rlimits: RLIMIT_CPU (``cpu_s``), RLIMIT_AS (``memory_mb``: large allocations raise MemoryError),
  RLIMIT_FSIZE (``max_file_bytes`` per file), RLIMIT_NPROC (``max_processes``), RLIMIT_CORE = 0; no_new_privs.
- environment: only PATH, HOME, TMPDIR, LANG, PYTHONIOENCODING, PYTHONDONTWRITEBYTECODE and
  OMP/OPENBLAS_NUM_THREADS=1 (single-threaded math libraries, so NPROC and AS hold on many-core hosts).
  ``-I`` also hides user site-packages; the interpreter's own packages (numpy, sympy, ...) stay importable.
- the snippet's parent is the disposable wrapper, never the host; the process group is killed after each call;
  if the host (its calling thread) dies mid-call, PR_SET_PDEATHSIG kills the wrapper and then the init.

Enforced when the kernel grants the namespaces (reported per call in ``PythonSandbox.last_isolation``):
- "net": a new network namespace with only a down loopback: no connection anywhere, host ports included.
- "pid", "ipc": a new PID namespace: the snippet cannot see or signal host processes (``os.getppid()`` is 0),
  and when its PID 1 exits the kernel kills every process left in it, even ones that left the process group.
- "fs": a new mount namespace in which every mount is remounted read-only and nosuid, the working directory
  is a private tmpfs of ``max_file_bytes`` (plus the code), and /proc is a fresh read-only procfs of the new
  PID namespace (other processes' environ and cmdline are out of sight). The snippet can read host files as
  its uid may, but writes only to its working directory. Filesystem sockets stay connectable where their
  permissions allow.
- "uid" (host is root, namespaces created directly): the snippet runs as an unprivileged uid unique to the
  call (0x40000000 + wrapper pid) without capabilities, so file permissions bind it, it cannot undo the
  mounts, and RLIMIT_NPROC (which never binds uid 0) caps its processes. Directories on the interpreter's
  path or the working directory's that others cannot search (e.g. /root for /root/.pyenv) are covered, inside
  the mount namespace, by a tmpfs holding only the needed entry, which also hides the rest of them.
- "userns" (creating the namespaces directly was refused, e.g. host not root): they belong to a new user
  namespace that maps only the caller's own uid, so RLIMIT_NPROC counts only this call's processes and file
  permissions are the caller's.

Not isolated: without "fs" the snippet writes wherever its user can; without "pid" it can signal its user's
processes and read their /proc entries, and processes that call setsid() survive the group kill (bounded by
RLIMIT_CPU only). As root without "uid" (no namespaces, or only "userns" for lack of CAP_SYS_ADMIN) it runs
as uid 0 with an empty capability bounding set: no capabilities after the exec, but root's files and device
nodes are its own (so "fs" is not reported) and RLIMIT_NPROC does not bind, leaving a fork bomb to the
timeout (and to the PID namespace teardown). The snippet is PID 1 of its namespace, so signals it sends
itself with a default action are ignored (RLIMIT_CPU still kills: soft = hard limit, so the kernel's SIGKILL
follows at once). No seccomp, no cgroups: CPU share and disk bandwidth are not limited, and RLIMIT_AS bounds
each process, not the sum over up to ``max_processes`` of them.
"""
from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from arpo.tools.base import ToolResult, truncate_utf8

_SNIPPET = "snippet.py"
_SIGNAL_HINTS = {"SIGKILL": " (memory or CPU limit?)", "SIGXCPU": " (CPU time limit)"}

# Runs in the wrapper process (argv[1] = JSON config, argv[2] = status pipe fd); stdlib only, no user code.
_BOOTSTRAP = r'''
import ctypes, json, os, re, resource, signal, sys, traceback

NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
        "strictatime": 1 << 24}
libc = ctypes.CDLL(None, use_errno=True)
cfg, status = json.loads(sys.argv[1]), int(sys.argv[2])
root = os.getuid() == 0


def report(*tokens):
    os.write(status, (" ".join(tokens) + " ").encode())


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def unshare():
    """New mount/PID/net/IPC namespaces: directly when allowed ("direct"), else in a user namespace that maps
    our own ids ("userns"); None when both are refused."""
    flags = NEWNS | NEWPID | NEWNET | NEWIPC
    if libc.unshare(flags) == 0:
        return "direct"
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(flags | NEWUSER) != 0:
        return None
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return "userns"


def expose(path):
    """Let any uid reach `path`: cover each ancestor others cannot search by a tmpfs with the next entry."""
    parts = os.path.realpath(path).strip("/").split("/")
    for i in range(1, len(parts)):
        parent = "/" + "/".join(parts[:i])
        if os.stat(parent).st_mode & 0o001:
            continue
        fd = os.open(parent, os.O_PATH)
        mount("tmpfs", parent, "tmpfs", NOSUID | NODEV, "size=64k,mode=0755")
        os.mkdir(os.path.join(parent, parts[i]))
        mount(f"/proc/self/fd/{fd}/{parts[i]}", os.path.join(parent, parts[i]), None, BIND | REC)
        os.close(fd)


def remount_readonly(keep):
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        flags = sum(KEEP.get(opt, 0) for opt in fields[5].split(","))
        if point == keep:
            continue
        try:
            mount(None, point, None, REMOUNT | BIND | RDONLY | NOSUID | flags)
        except FileNotFoundError:
            pass  # hidden under a mount made above: unreachable anyway


def setup_fs(workdir, owner):
    """Fresh read-only /proc, private tmpfs as the working directory, everything else read-only."""
    mount(None, "/", None, REC | PRIVATE)
    mount("proc", "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC)
    if owner != os.getuid():
        for path in {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(cfg["python"])), workdir}:
            expose(path)
    with open(os.path.join(workdir, cfg["snippet"]), "rb") as f:
        code = f.read()
    size = cfg["max_file_bytes"] + len(code) + 2**16
    mount("tmpfs", workdir, "tmpfs", NOSUID | NODEV, f"size={size},mode=0700,uid={owner},gid={owner}")
    with open(os.path.join(workdir, cfg["snippet"]), "wb") as f:
        f.write(code)
    remount_readonly(workdir)


def init(workdir, uid):
    """PID 1 of the new namespace (or a plain child): isolate what the kernel allows, exec the snippet.
    `uid` is the call's own uid for root in direct namespaces (only inside the mount namespace is the
    interpreter reachable for it), else our own."""
    try:
        setup_fs(workdir, uid)
        isolated = True
    except OSError:
        isolated = False  # (partly) not isolated: last_isolation omits "fs" and "uid"
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last): no capability survives exec
    if isolated and uid != os.getuid():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        report("fs", "uid")
    elif isolated and not root:  # uid 0 without a uid change could still open root's device nodes
        report("fs")
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the wrapper (after setresuid, which clears it)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, cfg["cpu_s"]),
                       (resource.RLIMIT_AS, cfg["memory_mb"] * 2**20),
                       (resource.RLIMIT_FSIZE, cfg["max_file_bytes"]),
                       (resource.RLIMIT_NPROC, cfg["max_processes"])):
        resource.setrlimit(res, (value, value))
    os.chdir(workdir)
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-X", "utf8", cfg["snippet"]], os.environ)


def main():
    os.set_inheritable(status, False)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the host thread that started us
    if os.getppid() != cfg["host_pid"]:
        os._exit(125)  # the host is already gone
    namespaces = unshare()
    if namespaces:
        report("net", "pid", "ipc", *(["userns"] if namespaces == "userns" else []))
    uid = 0x40000000 + os.getpid() if root and namespaces == "direct" else os.getuid()
    pid = os.fork()
    if pid == 0:
        try:
            init(os.getcwd(), uid)
        except BaseException:
            traceback.print_exc()
        os._exit(126)
    os.close(status)
    wait = os.waitpid(pid, 0)[1]
    if os.WIFSIGNALED(wait):  # die the same way, so the host sees the signal
        sig = os.WTERMSIG(wait)
        if sig != signal.SIGKILL:  # Python ignores some signals (SIGPIPE, SIGXFSZ); SIGKILL has no handler
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(wait) & 0xFF)


main()
'''


class PythonSandbox:
    """``sandbox(code) -> ToolResult``: run ``code`` as a script in a fresh sandboxed interpreter.

    ok is False on a non-zero exit, a signal or the timeout; the text is then the output followed by one line
    ``Error: exit code N`` / ``Error: killed by signal SIGKILL (memory or CPU limit?)`` / ``Error: timed out
    after T s``. A successful run without output gives ``(no output)``. Thread-safe: calls share no state
    except ``last_isolation``, the isolation tokens ("net", "pid", "ipc", "fs", "uid", "userns") the latest
    call obtained.
    """

    name = "python"

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 1024, max_output_bytes: int = 2048,
                 cpu_s: int | None = None, max_file_bytes: int = 16 * 2**20, max_processes: int = 64,
                 python: str = sys.executable):
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a positive finite number, got {timeout_s!r}")
        cpu_s = math.ceil(timeout_s) + 1 if cpu_s is None else cpu_s
        ints = {"memory_mb": memory_mb, "max_output_bytes": max_output_bytes, "cpu_s": cpu_s,
                "max_file_bytes": max_file_bytes, "max_processes": max_processes}
        for arg, value in ints.items():
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise ValueError(f"python must be an executable file, got {python!r}")
        self.timeout_s, self.max_output_bytes, self.python = float(timeout_s), max_output_bytes, python
        self._config = {"python": python, "snippet": _SNIPPET, "cpu_s": cpu_s, "memory_mb": memory_mb,
                        "max_file_bytes": max_file_bytes, "max_processes": max_processes}
        self.last_isolation: frozenset[str] = frozenset()

    def __call__(self, code: str) -> ToolResult:
        start = time.monotonic()
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="arpo-py-"))
        try:
            with open(os.path.join(workdir, _SNIPPET), "wb") as f:
                f.write(code.encode("utf-8", errors="surrogatepass"))
            head, returncode = self._execute(workdir, start + self.timeout_s)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return self._result(head, returncode, time.monotonic() - start)

    def _execute(self, workdir: str, deadline: float) -> tuple[bytes, int | None]:
        """Run the wrapper; returns (output head, wrapper's return code or None on timeout)."""
        status_r, status_w = os.pipe()
        config = json.dumps({**self._config, "host_pid": os.getpid()})
        try:
            proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", _BOOTSTRAP, config, str(status_w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir,
                env=_environment(workdir), start_new_session=True, pass_fds=(status_w,))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        try:
            head, exited = self._collect(proc, deadline)
        finally:
            _kill_group(proc.pid)  # the wrapper is not reaped yet, so its group id cannot have been reused
            proc.wait()
            proc.stdout.close()
            self.last_isolation = _read_tokens(status_r)
        return head, proc.returncode if exited else None

    def _collect(self, proc: subprocess.Popen, deadline: float) -> tuple[bytes, bool]:
        """Drain the output until EOF and wrapper exit (or the deadline); keep max_output_bytes + 1 bytes."""
        head, exited, keep = bytearray(), False, self.max_output_bytes + 1
        out, pidfd = proc.stdout.fileno(), os.pidfd_open(proc.pid)
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            sel.register(pidfd, selectors.EVENT_READ)
            while sel.get_map() and (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    if key.fd == pidfd:
                        exited = True
                        sel.unregister(pidfd)
                        _kill_group(proc.pid)  # leftover children would otherwise hold the pipe open
                    elif chunk := os.read(out, 1 << 16):
                        head += chunk[: keep - len(head)]
                    else:
                        sel.unregister(out)
        os.close(pidfd)
        return bytes(head), exited

    def _result(self, head: bytes, returncode: int | None, elapsed: float) -> ToolResult:
        text, truncated = truncate_utf8(head.decode("utf-8", errors="replace"), self.max_output_bytes)
        if returncode == 0:
            return ToolResult(text or "(no output)", True, elapsed, truncated)
        if returncode is None:
            error = f"Error: timed out after {self.timeout_s} s"
        elif returncode < 0:
            sig = _signal_name(-returncode)
            error = f"Error: killed by signal {sig}{_SIGNAL_HINTS.get(sig, '')}"
        else:
            error = f"Error: exit code {returncode}"
        sep = "\n" if text and not text.endswith("\n") else ""
        return ToolResult(f"{text}{sep}{error}", False, elapsed, truncated)


def _environment(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_tokens(fd: int) -> frozenset[str]:
    """The isolation tokens the wrapper and init wrote to the status pipe (all writers are gone by now)."""
    with os.fdopen(fd, "rb") as f:
        return frozenset(f.read().decode().split())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
