"""Sandboxed Python interpreter tool: run a model-written snippet in a fresh, limited, throwaway process.

Linux only. One call::

    host ─send_fds─▶ zygote   `python -IB -Xutf8 _sandbox_child.py FD`, started once per sandbox (on the first
                       │      call; again if it died): own session, scrubbed environment, stdio on /dev/null,
                       │      only the socket pair; it never runs model code nor sees the code
                       └─fork─▶ wrapper  own session and process group, the call's working directory and
                                  │      environment, output pipe on fds 1-2; joins the call's cgroup, then
                                  │      unshares the mount, PID, net and IPC namespaces one by one (inside a
                                  │      new user namespace when none is granted directly)
                                  └─fork─▶ init  PID 1 of the new PID namespace (or a plain child): private
                                                 filesystem view if it has its own mount namespace, drops
                                                 privileges, sets rlimits, checks the isolation policy, drops
                                                 every capability and runs snippet.py in this forked
                                                 interpreter (user code)

The zygote is the module ``_sandbox_child.py`` next to this one (standard library only), run by path before any
isolation (the host's uid can read the package) with the flags the snippet's interpreter always had (-I: its
directory is not put on sys.path, no user site, environment ignored; -B; UTF-8 mode; site-packages importable).
Starting an interpreter and importing is paid once; a call costs two forks, the namespaces and mounts. Whatever
a call's processes would compute without isolating anything (its directory as working directory, its
environment, which directories to expose, ctypes lookups) the zygote does before the fork: each page a call's
Python code touches is copied, in the wrapper and again in the init, while the zygote takes at most one fault
per page and call, mostly without a copy (the previous call's wrapper has let go of it).

Threat model of the zygote: every call's processes are forked from it, so the snippet can read everything the
zygote holds; it therefore holds nothing secret: the scrubbed environment, no descriptor but the socket pair
(each wrapper closes all but its output and status pipes; the init closes the status pipe before the snippet
runs, so the snippet cannot forge isolation tokens), the sandbox's limits and the paths of calls' directories
and cgroups (it moves into a call's directory and takes on its environment for the fork, then returns to /),
never code or output. The snippet cannot reach the zygote: it is outside the call's PID namespace
and runs as root when the snippet does not. Each call gets its own namespaces, cgroup, uid and tmpfs (nothing
is shared between concurrent calls but the zygote's read-only memory image). The host talks to the zygote over
a SEQPACKET socket pair: per call the JSON config with three descriptors (a reply socket, the output pipe, the
status pipe); on the reply socket the zygote writes the wrapper's pid, then its return code once it exited;
it reaps the wrapper only when the host closes the reply socket, so the host can still kill the wrapper's
process group by number. The zygote exits, killing every wrapper (each also has PR_SET_PDEATHSIG on it), when
the host closes the socket pair (``close()``, garbage collection, host exit) or dies; a zygote found dead is
replaced on the next call, and a call in flight when it dies is reported killed by SIGKILL.

What the snippet sees is what ``python -I -B -X utf8 snippet.py`` showed it (``__name__ == "__main__"``,
``__file__``, sys.argv, sys.orig_argv, sys.flags, sys.path, tracebacks naming /tmp/snippet.py, SystemExit
codes, 130 after KeyboardInterrupt, threads joined and atexit handlers run at exit, ``import numpy``), with
these differences: modules the zygote imported (ctypes, json, socket, select, ...) are already in sys.modules;
``hash()`` of str/bytes is salted per zygote, not per call (so set order of strings repeats from call to call
of one sandbox); at exit only __main__'s globals are released and garbage-collected, the other modules are not
torn down (a __del__ that would run only then does not); RLIMIT_CPU counts the snippet's CPU time only (no
interpreter start-up).

The code travels in ``snippet.py`` inside a fresh ``tempfile.mkdtemp`` directory (never on a command line, nor
is anything identifying the host), which is the snippet's working directory, HOME and TMPDIR (seen as /tmp
under "fs"), and is deleted after the call. stdout and stderr share one pipe (they interleave as on a
terminal); the host keeps the first ``max_output_bytes`` and discards the rest while draining, so unbounded
output never reaches host memory. The wall-clock timeout covers the whole call; afterwards (timeout or not)
the wrapper's process group is SIGKILLed, and so is everything left in the call's cgroup.

Isolation policy: a call needs "pid" and one of "fs" / "uid" (the snippet can neither signal the host nor
write host files as the host's uid). With ``require_isolation=True`` (the default) a call without them runs no
code and returns ``Error: python sandbox unavailable: <why> ...``; with False it runs with what was granted.
Either way a sandbox logs a warning the first time the policy is not met.

Always enforced:
- rlimits: RLIMIT_CPU (``cpu_s``), RLIMIT_AS (``memory_mb`` per process: large allocations raise MemoryError),
  RLIMIT_FSIZE (``max_file_bytes`` per file), RLIMIT_NPROC (``max_processes``), RLIMIT_CORE = 0; no_new_privs.
- environment: only PATH, HOME, TMPDIR, LANG, PYTHONIOENCODING, PYTHONDONTWRITEBYTECODE and
  OMP/OPENBLAS_NUM_THREADS=1 (single-threaded math libraries, so NPROC and AS hold on many-core hosts).
  ``-I`` also hides user site-packages; the interpreter's own packages (numpy, sympy, ...) stay importable.
- the snippet's parent is the disposable wrapper, never the host nor the zygote; the wrapper's process group is
  killed after each call; if the host dies mid-call, the zygote kills the wrappers and PR_SET_PDEATHSIG the inits.
- no capabilities: effective, permitted, inheritable, ambient and bounding sets are empty when the snippet runs.
- a host running as root never runs the snippet as uid 0 outside a user namespace (see "uid").

Enforced when granted (reported per call in ``PythonSandbox.last_isolation``):
- "cgroup": the call's processes share a fresh cgroup (a child of the host's own: v2 where that delegates
  memory and pids, else v1 memory + pids), removed after the call: ``memory_mb`` bounds their total memory
  (beyond it the kernel's OOM killer SIGKILLs one of them; no swap) and ``max_processes`` their total tasks,
  and every process left in it is killed when the wrapper exits, even one that left the process group.
  Cgroups left by a host killed mid-call are removed by the next call.
- "net": a new network namespace with only a down loopback: no connection anywhere, host ports included.
- "pid", "ipc": a new PID namespace: the snippet cannot see or signal host processes (``os.getppid()`` is 0),
  and when its PID 1 exits the kernel kills every process left in it, even ones that left the process group.
- "fs": a mount namespace of the call's own (the host's mounts are never touched), in which every mount is
  made read-only and nosuid (one recursive mount_setattr, Linux >= 5.12, which also covers mounts hidden under
  others; else remounted one by one), /tmp is a private tmpfs of ``max_file_bytes`` (plus the code) holding the
  code as /tmp/snippet.py (so tracebacks are the same run to run; the host's /tmp is hidden) and /proc is a
  fresh read-only procfs of the new PID namespace (other processes' environ and cmdline are out of sight).
  The snippet can read host files as its uid may, but writes only to /tmp. Filesystem sockets stay
  connectable where their permissions allow. (If the interpreter lives under /tmp, the tmpfs is mounted on
  the random working directory instead.) Wherever the snippet ran, the call's directory appears as /tmp in
  its output, so the same code always gives the same text (and rollouts stay reproducible).
- "uid" (host is root, not in a user namespace): the snippet runs as an unprivileged uid unique to the call
  (0x40000000 + wrapper pid) without capabilities, so file permissions bind it, it cannot undo the mounts or
  signal root's processes, and RLIMIT_NPROC (which never binds uid 0) caps its processes. Directories on the
  interpreter's path that others cannot search (e.g. /root for /root/.pyenv) are covered, inside the mount
  namespace, by a tmpfs holding only the needed entry, which also hides the rest of them. Without "fs" the
  working directory is chowned to that uid, and an interpreter under such a directory cannot start.
- "userns" (no namespace could be created directly, e.g. host not root): they belong to a new user namespace
  that maps only the caller's own uid, so RLIMIT_NPROC counts only this call's processes and file permissions
  are the caller's.

Not isolated: without "fs" the snippet writes wherever its uid may (world-writable /tmp and /dev/shm included;
as the host's own uid that is the host's files), sees the host's /proc, and tracebacks show the random working
directory; without "pid" it can see its user's processes and signal them if it has the host's uid, and without
"pid" and "cgroup" processes that call setsid() survive the group kill (bounded by RLIMIT_CPU only). As root
with only "userns" (no CAP_SYS_ADMIN) it runs as uid 0 with every capability set emptied (capset), but root's files and device nodes are its own (so "fs" is not reported) and RLIMIT_NPROC does
not bind. Without "cgroup", memory is bounded per process only: ``memory_mb`` x ``max_processes`` bounds the
total, which is why ``max_processes`` defaults to 16 then (64 with "cgroup"). The snippet is PID 1 of its
namespace, so signals it sends itself with a default action are ignored (RLIMIT_CPU still kills: soft = hard
limit, so the kernel's SIGKILL follows at once). No seccomp: CPU share and disk bandwidth are not limited.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path

from arpo.tools.base import BUILTIN_SPECS, ToolResult, truncate_utf8

log = logging.getLogger(__name__)

_SNIPPET = "snippet.py"
_SIGNAL_HINTS = {"SIGKILL": " (memory or CPU limit?)", "SIGXCPU": " (CPU time limit)"}
# The isolation policy: every group needs one of its tokens; the key says why when none was granted.
_REQUIRED = {"no PID namespace": ("pid",),
             "neither a private filesystem nor a uid other than the host's": ("fs", "uid")}
_UNAVAILABLE = ("Error: python sandbox unavailable: {} (set tools.python_require_isolation=false to run with "
                "rlimits only)")
_CGROUP_PREFIX = "arpo-py-"
_STALE = re.compile(_CGROUP_PREFIX + r"(\d+)-[0-9a-f]+")
_CGROUP_OPTIONAL = {"memory.swap.max", "memory.memsw.limit_in_bytes"}  # absent without swap accounting

# The zygote: the module _sandbox_child.py (argv[1] = its end of the socket pair; stdlib only, no user code), run by
# path as `python -IB -Xutf8 _CHILD FD` (-I: its directory is not put on sys.path).
_CHILD = Path(__file__).resolve().with_name("_sandbox_child.py")


class PythonSandbox:
    """``sandbox(code) -> ToolResult``: run ``code`` as a script in a fresh sandboxed interpreter.

    ok is False on a non-zero exit, a signal or the timeout; the text is then the output followed by one line
    ``Error: exit code N`` / ``Error: killed by signal SIGKILL (memory or CPU limit?)`` / ``Error: timed out
    after T s``; or, when ``require_isolation`` and the policy is not met, only ``Error: python sandbox
    unavailable: ...``. A successful run without output gives ``(no output)``. ``max_processes=None`` means 64
    with a cgroup, else 16. Thread-safe: calls share no state except the zygote and ``last_isolation``, the
    isolation tokens ("cgroup", "net", "pid", "ipc", "fs", "uid", "userns") the latest call obtained. ``close()``
    stops the zygote (a later call starts another).
    """

    name = "python"
    spec = BUILTIN_SPECS["python"]

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 1024, max_output_bytes: int = 2048,
                 cpu_s: int | None = None, max_file_bytes: int = 16 * 2**20, max_processes: int | None = None,
                 python: str = sys.executable, require_isolation: bool = True):
        if not 0 < timeout_s < math.inf:
            raise ValueError(f"timeout_s must be a positive finite number, got {timeout_s!r}")
        cpu_s = math.ceil(timeout_s) + 1 if cpu_s is None else cpu_s
        ints = {"memory_mb": memory_mb, "max_output_bytes": max_output_bytes, "cpu_s": cpu_s,
                "max_file_bytes": max_file_bytes}
        if max_processes is not None:
            ints["max_processes"] = max_processes
        for arg, value in ints.items():
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise ValueError(f"python must be an executable file, got {python!r}")
        self.timeout_s, self.max_output_bytes, self.python = float(timeout_s), max_output_bytes, python
        self.memory_mb, self.max_processes = memory_mb, max_processes
        self.require_isolation = require_isolation
        self._config = {"python": python, "snippet": _SNIPPET, "cpu_s": cpu_s, "memory_mb": memory_mb,
                        "max_file_bytes": max_file_bytes}
        self.last_isolation: frozenset[str] = frozenset()
        self._warned = False
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None

    def __call__(self, code: str) -> ToolResult:
        start = time.monotonic()
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="arpo-py-"))
        cgroup = None
        try:
            with open(os.path.join(workdir, _SNIPPET), "wb") as f:
                f.write(code.encode("utf-8", errors="surrogatepass"))
            cgroup = _Cgroup.create(self.memory_mb * 2**20, self.max_processes or 64)
            head, returncode, tokens = self._execute(workdir, start + self.timeout_s, cgroup)
        finally:
            if cgroup is not None:
                cgroup.remove()
            _remove_workdir(workdir)
        head = head.replace(workdir.encode(), b"/tmp")  # the same text whatever the call's directory is named
        self.last_isolation = tokens - {"refused"}
        self._warn_once(self.last_isolation)
        if "refused" in tokens:
            return ToolResult(_UNAVAILABLE.format(_lacking(tokens)), False, time.monotonic() - start)
        return self._result(head, returncode, time.monotonic() - start)

    def close(self) -> None:
        """Stop the warm zygote (a later call starts a new one)."""
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.stop()

    def _execute(self, workdir: str, deadline: float, cgroup: _Cgroup | None
                 ) -> tuple[bytes, int | None, frozenset[str]]:
        """Run the call's wrapper: (output head, its return code or None on timeout, isolation tokens)."""
        config = {**self._config, "workdir": workdir, "env": _environment(workdir),
                  "cgroup": cgroup.procs if cgroup else [],
                  "max_processes": self.max_processes,  # None: the init picks 64 or 16
                  "require": list(_REQUIRED.values()) if self.require_isolation else []}
        (out_r, out_w), (status_r, status_w) = os.pipe(), os.pipe()
        try:
            call = self._start(config, out_w, status_w)
        except BaseException:
            os.close(out_r)
            os.close(status_r)
            raise
        finally:
            os.close(out_w)
            os.close(status_w)
        try:
            head = self._collect(call, out_r, deadline, cgroup)
        finally:
            call.finish()  # the wrapper is not reaped before this, so its group id cannot have been reused
            os.close(out_r)
            tokens = _read_tokens(status_r)
        return head, call.returncode, tokens

    def _start(self, config: dict, out_w: int, status_w: int) -> _Call:
        """Have the zygote fork the call's wrapper; a zygote found dead is replaced once."""
        for attempt in (0, 1):
            with self._lock:
                if self._zygote is None or not self._zygote.usable():
                    self._zygote = _Zygote(self.python)
                zygote = self._zygote
            call = zygote.start(config, out_w, status_w)
            if call is not None:
                return call
            with self._lock:
                if self._zygote is zygote:
                    self._zygote = None
            zygote.stop()
        raise RuntimeError("python sandbox: the zygote process died twice on start-up")

    def _collect(self, call: _Call, out: int, deadline: float, cgroup: _Cgroup | None) -> bytes:
        """Drain the output until EOF and wrapper exit (or the deadline); keep max_output_bytes + 1 bytes."""
        head, keep, reply = bytearray(), self.max_output_bytes + 1, call.reply.fileno()
        poll, waiting = select.poll(), 2
        poll.register(out, select.POLLIN)
        poll.register(reply, select.POLLIN)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poll.poll(math.ceil(left * 1000)):
                if fd == reply:
                    poll.unregister(reply)
                    waiting -= 1
                    call.read_exit()
                    call.kill_group()  # leftover children would otherwise hold the pipe open
                    if cgroup is not None:
                        cgroup.kill()  # and so would those that left the group
                elif chunk := os.read(out, 1 << 16):
                    head += chunk[: keep - len(head)]
                else:
                    poll.unregister(out)
                    waiting -= 1
        return bytes(head)

    def _warn_once(self, tokens: frozenset[str]) -> None:
        if self._warned or not (why := _lacking(tokens)):
            return
        self._warned = True
        if self.require_isolation:
            log.warning("%s", _UNAVAILABLE.format(why))
        else:
            log.warning("python sandbox runs without full isolation (%s): only %s", why,
                        sorted(tokens) or "rlimits")

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


class _Zygote:
    """The warm process (``_sandbox_child.py``, started once) that forks each call's wrapper. Its socket pair
    carries one message per call: the JSON config with the reply socket, output pipe and status pipe."""

    def __init__(self, python: str):
        self.owner = os.getpid()
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [python, "-IB", "-Xutf8", str(_CHILD), str(theirs.fileno())], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", env=_environment("/"),
                start_new_session=True, pass_fds=(theirs.fileno(),))
        except BaseException:
            self.ctl.close()
            raise
        finally:
            theirs.close()
        self._send_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_zygote, self.ctl, self.proc)

    def usable(self) -> bool:
        """Alive and ours (a forked host must not share its parent's zygote)."""
        return self.owner == os.getpid() and self.proc.poll() is None

    def start(self, config: dict, out_w: int, status_w: int) -> _Call | None:
        """The call whose wrapper the zygote forked, or None if the zygote is dead."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._send_lock:
                socket.send_fds(self.ctl, [json.dumps(config).encode()], [theirs.fileno(), out_w, status_w])
            pid = mine.recv(64)  # b"": the zygote died (the message and its descriptors went with it)
        except OSError:
            pid = b""
        finally:
            theirs.close()
        if not pid:
            mine.close()
            return None
        return _Call(mine, int(pid))

    def stop(self) -> None:
        self._finalizer()


def _stop_zygote(ctl: socket.socket, proc: subprocess.Popen) -> None:
    """Close the socket pair (the zygote then kills its wrappers and exits) and reap it."""
    ctl.close()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Call:
    """One call's wrapper, a child of the zygote: unreaped until ``finish``, so its pid names its group."""

    def __init__(self, reply: socket.socket, pid: int):
        self.reply, self.pid = reply, pid
        self.returncode: int | None = None  # None: still running (or timed out)
        self.exited = self.lost = False  # lost: the zygote died, so the wrapper is reaped (by someone else)

    def read_exit(self) -> None:
        """The wrapper's return code as the zygote reports it (-SIGKILL if the zygote died)."""
        msg = self.reply.recv(64)
        self.exited = True
        self.returncode = int(msg.split()[1]) if msg else -signal.SIGKILL
        self.lost = not msg

    def kill_group(self) -> None:
        if not self.lost:  # a dead zygote's wrappers were reaped: their ids may be reused
            _kill_group(self.pid)

    def finish(self) -> None:
        """Kill the wrapper's group, wait until the wrapper is dead, then let the zygote reap it."""
        self.kill_group()
        if not self.exited:
            self.read_exit()
            self.exited, self.returncode = False, None
        self.reply.close()


class _Cgroup:
    """One call's cgroup: a v2 directory, or v1 memory and pids directories, each a child of our own."""

    def __init__(self, dirs: list[str]):
        self.dirs = dirs
        self.procs = [os.path.join(d, "cgroup.procs") for d in dirs]

    @classmethod
    def create(cls, memory_bytes: int, tasks: int) -> _Cgroup | None:
        """A fresh cgroup with these limits, or None where none can be made (not root, no delegation)."""
        name, dirs = f"{_CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}", []
        try:
            for parent, limits in _cgroup_plan(_read("/proc/self/cgroup"), memory_bytes, tasks):
                _remove_stale(parent)
                dirs.append(os.path.join(parent, name))
                os.mkdir(dirs[-1])
                for file, value in limits.items():
                    _write(os.path.join(dirs[-1], file), value, missing_ok=file in _CGROUP_OPTIONAL)
        except OSError:
            cls(dirs).remove()
            return None
        return cls(dirs) if dirs else None

    def kill(self) -> None:
        """SIGKILL every process in it, also those that left the process group."""
        _kill_members(self.dirs[-1])

    def remove(self, wait_s: float = 2.0) -> None:
        """Delete it; while processes are left in it (rmdir refused), kill them (no new ones: pids.max = 0)."""
        deadline = time.monotonic() + wait_s
        for directory in reversed(self.dirs):
            frozen = False
            while True:
                try:
                    os.rmdir(directory)  # an empty cgroup (the usual case) goes at once
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if not frozen:
                        _write(os.path.join(directory, "pids.max"), 0, missing_ok=True)
                        frozen = True
                    elif time.monotonic() > deadline:
                        log.warning("python sandbox: cannot remove cgroup %s", directory)
                        break
                    _kill_members(directory)
                    time.sleep(0.01)


@functools.lru_cache(maxsize=16)
def _cgroup_plan(own: str, memory_bytes: int, tasks: int) -> list[tuple[str, dict[str, int]]]:
    """(parent directory, {file: limit}) per cgroup to make, v2 preferred; [] when there is none. `own`: the
    text of /proc/self/cgroup, so the plan (it parses the mount table) is made again when the host moves."""
    parents = _own_cgroups()
    v2 = parents.get("")
    if v2 and {"memory", "pids"} <= set(_read(os.path.join(v2, "cgroup.subtree_control")).split()):
        return [(v2, {"memory.max": memory_bytes, "memory.swap.max": 0, "pids.max": tasks})]
    if "memory" in parents and "pids" in parents:
        memsw = "memory.memsw.limit_in_bytes"  # memory + swap: written after memory.limit_in_bytes
        return [(parents["memory"], {"memory.limit_in_bytes": memory_bytes, memsw: memory_bytes}),
                (parents["pids"], {"pids.max": tasks})]
    return []


def _own_cgroups() -> dict[str, str]:
    """Directory of this process's cgroup per v1 controller ("memory", "pids") and in cgroup2 ("")."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        own.update((name, path) for name in names.split(","))
    found = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        fstype, options = fields[-3], fields[-1].split(",")
        names = [""] if fstype == "cgroup2" else [o for o in options if o in ("memory", "pids")]
        names = names if fstype in ("cgroup", "cgroup2") else []
        root, point = fields[3].rstrip("/"), re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        for name in names:
            if name in own and (own[name] + "/").startswith(root + "/"):
                found.setdefault(name, os.path.normpath(point + own[name][len(root):]))
    return found


def _remove_stale(parent: str) -> None:
    """Remove cgroups a dead host left behind (it was killed mid-call)."""
    for entry in os.listdir(parent):
        if entry.startswith(_CGROUP_PREFIX) and (m := _STALE.fullmatch(entry)) and not _alive(int(m[1])):
            _Cgroup([os.path.join(parent, entry)]).remove(wait_s=0.1)


def _kill_members(directory: str) -> None:
    if os.path.exists(kill := os.path.join(directory, "cgroup.kill")):
        _write(kill, 1)
        return
    for pid in map(int, _read(os.path.join(directory, "cgroup.procs")).split()):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:  # the pidfd pins the process: check it is ours before signalling
            if os.path.basename(directory) in _read(f"/proc/{pid}/cgroup"):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _read(path: str) -> str:
    fd, chunks = os.open(path, os.O_RDONLY | os.O_CLOEXEC), []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: str, value: int, missing_ok: bool = False) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"%d" % value)
        finally:
            os.close(fd)
    except OSError:
        if not missing_ok:
            raise


def _remove_workdir(workdir: str) -> None:
    """Delete the call's directory: it holds only the code unless the snippet wrote there (no "fs")."""
    try:
        os.unlink(os.path.join(workdir, _SNIPPET))
        os.rmdir(workdir)
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)


def _lacking(tokens: frozenset[str]) -> str:
    """Why ``tokens`` do not meet the isolation policy ("" when they do)."""
    return "; ".join(why for why, group in _REQUIRED.items() if not tokens & set(group))


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
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return frozenset(b"".join(chunks).decode().split())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
