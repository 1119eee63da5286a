"""The sandbox's zygote (see ``python_sandbox``): the host runs this file by path, once per sandbox, as
``python -IB -Xutf8 _sandbox_child.py FD`` (the snippet's interpreter flags) with a scrubbed environment, stdin,
stdout and stderr on /dev/null and FD one end of a Unix SEQPACKET socket pair. Per call the host sends one message
on it: the call's JSON config with three descriptors (a reply socket, the output pipe, the status pipe). The
zygote forks the call's wrapper, which moves into its own session, joins the call's cgroup, unshares the
namespaces and forks the init, which isolates the filesystem, drops privileges, sets the rlimits, checks the
isolation policy and runs the snippet in its own (forked, already started) interpreter.

The zygote never runs model code, never sees the code (only paths and descriptors) and holds nothing the snippet
may not see: it is forked for every call, so its memory is the snippet's to read. Before each fork it prepares
what needs no isolation (``prepare``: the call's working directory and environment, the tmpfs target, the
directories to expose), so that the call's processes run as little Python as they can: every page they touch
is a copy-on-write fault. It writes the wrapper's pid on the reply socket, then its return code once it exits
(a zombie until then, so the host can kill its process group by number), and reaps it when the host closes the
reply socket. It exits, killing every wrapper, when the host closes the socket pair or dies.

Standard library only, nothing of ``arpo``: it runs in an isolated interpreter where ``arpo`` need not be
importable. The source ends with the bare ``main()`` call (tests insert code before it); imported as a module,
it does nothing.
"""
import ctypes, gc, json, os, re, resource, select, signal, socket, sys, traceback

NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
NAMESPACES = ((NEWNS, "mnt"), (NEWPID, "pid"), (NEWNET, "net"), (NEWIPC, "ipc"))
ALL_NAMESPACES = NEWNS | NEWPID | NEWNET | NEWIPC
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
        "strictatime": 1 << 24}
AT_FDCWD, AT_RECURSIVE, MOUNT_SETATTR, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = -100, 0x8000, 442, 1, 2
libc = ctypes.CDLL(None, use_errno=True)
# Looked up once here, not in every call's processes: a first lookup writes to (so copies) pages the call shares
# with the zygote (as does every object a call's Python code touches: the wrapper and the init run as little
# Python as they can).
mount_, unshare_, prctl, capset, syscall = libc.mount, libc.unshare, libc.prctl, libc.capset, libc.syscall
fopen = libc.fopen
fopen.restype, fopen.argtypes = ctypes.c_void_p, (ctypes.c_char_p, ctypes.c_char_p)
run_file = ctypes.pythonapi.PyRun_FileExFlags  # what the interpreter's runner calls, minus its exit handling
run_file.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object,
                     ctypes.c_int, ctypes.c_void_p)
run_file.restype = ctypes.py_object
CAP_HEADER = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
CAP_DATA = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: empty
# struct mount_attr: attr_set, attr_clr, propagation, userns_fd
READONLY_ATTR = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
try:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        LAST_CAP = int(f.read())
except (OSError, ValueError):
    LAST_CAP = 63
cfg, status, root = {}, 3, False  # set per call: config, status pipe (fd 3 in the wrapper), host is root
paths = {}  # per path: the real directories an interpreter needs, the ancestors of a directory (in the zygote)


def report(*tokens):
    os.write(status, (" ".join(tokens) + " ").encode())


def mount(src, dst, fstype, flags, data=None):
    """mount(2); the arguments are bytes or None."""
    if mount_(src, dst, fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(dst))


def try_unshare(flag):
    return unshare_(flag) == 0


def unshare_each():
    """All namespaces in one unshare() (the common case), else one by one: the names of those created."""
    if try_unshare(ALL_NAMESPACES):
        return {name for _, name in NAMESPACES}
    return {name for flag, name in NAMESPACES if try_unshare(flag)}


def unshare():
    """New namespaces: directly when any is allowed, else in a new user namespace that maps our own ids.
    Returns the names of those created ("mnt": mount namespace, "userns")."""
    made = unshare_each()
    if made or not try_unshare(NEWUSER):
        return made
    uid, gid = os.getuid(), os.getgid()
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        write_file(f"/proc/self/{name}", text.encode())
    return {"userns"} | unshare_each()


def write_file(path, data, flags=os.O_WRONLY):
    fd = os.open(path, flags | os.O_CLOEXEC, 0o666)  # as open(path, "wb"): the umask applies
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(path):
    fd, chunks = os.open(path, os.O_RDONLY | os.O_CLOEXEC), []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def join_cgroup():
    try:
        for procs in cfg["cgroup"]:
            write_file(procs, b"%d" % os.getpid())
    except OSError:
        return False
    return bool(cfg["cgroup"])


def ancestors(path, cache=False):
    """(directory, its entry on the way) for each directory above `path` (resolved), from the top down."""
    if path not in paths:
        parts = os.path.realpath(path).strip("/").split("/")
        found = [("/" + "/".join(parts[:i]), parts[i]) for i in range(1, len(parts))]
        if not cache:
            return found
        paths[path] = found
    return paths[path]


def expose(path):
    """Let any uid reach `path`: cover each ancestor others cannot search by a tmpfs with the next entry."""
    for parent, entry in cfg["ancestors"][path] if path in cfg["ancestors"] else ancestors(path):
        if os.stat(parent).st_mode & 0o001:
            continue
        fd = os.open(parent, os.O_PATH)
        mount(b"tmpfs", os.fsencode(parent), b"tmpfs", NOSUID | NODEV, b"size=64k,mode=0755")
        os.mkdir(child := os.path.join(parent, entry))
        mount(os.fsencode(f"/proc/self/fd/{fd}/{entry}"), os.fsencode(child), None, BIND | REC)
        os.close(fd)


def readonly_tree():
    """Every mount of this namespace read-only and nosuid at once (mount_setattr, Linux >= 5.12); False where
    the kernel refuses (then nothing changed: the call is all or nothing)."""
    return syscall(MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, READONLY_ATTR, ctypes.sizeof(READONLY_ATTR)) == 0


def remount_readonly(keep):
    """The same, one mount at a time (older kernels), except the mount at `keep`."""
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        flags = sum(KEEP.get(opt, 0) for opt in fields[5].split(","))
        if point == keep:
            continue
        try:
            mount(None, os.fsencode(point), None, REMOUNT | BIND | RDONLY | NOSUID | flags)
        except FileNotFoundError:
            pass  # hidden under a mount made above: unreachable anyway


def interpreter_dirs(python):
    """The directories the interpreter `python` needs: its prefixes and bin/ (real paths)."""
    if python not in paths:
        paths[python] = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                         os.path.dirname(os.path.realpath(python)),
                         os.path.dirname(os.path.abspath(python))}  # a venv's bin/ (its python is a symlink)
    return paths[python]


def prepare(config):
    """What the call's processes would compute, computed here, before the fork (a page written here faults at most
    once per call, mostly without a copy; in the call's processes each page touched is copied, in the wrapper
    and again in the init): the interpreter's directories, the tmpfs target, the directories to expose and their
    ancestors, the working directory and the environment (the wrapper inherits them)."""
    dirs = interpreter_dirs(config["python"])
    under_tmp = any(p == "/tmp" or p.startswith("/tmp/") for p in dirs)
    config["target"] = target = config["workdir"] if under_tmp or not os.path.isdir("/tmp") else "/tmp"
    config["expose"] = list({*dirs, target})
    config["ancestors"] = {path: ancestors(path, cache=True) for path in (*dirs, "/tmp")}  # the call's: in init
    try:
        os.chdir(config["workdir"])
        config["in_workdir"] = True
    except OSError:  # the wrapper tries again and fails the call
        config["in_workdir"] = False
    set_environment(config["env"])
    return config


def setup_fs(workdir, owner):
    """Only ever called in our own mount namespace: fresh read-only /proc, the code alone in a private tmpfs
    at /tmp (the working directory from then on), everything else read-only."""
    code = read_file(cfg["snippet"])  # relative to the working directory, before any mount hides it
    mount(None, b"/", None, REC | PRIVATE)
    mount(b"proc", b"/proc", b"proc", RDONLY | NOSUID | NODEV | NOEXEC)
    target = cfg["target"]  # /tmp, or the working directory if the interpreter is under /tmp (or no /tmp)
    if owner != os.getuid():
        for path in cfg["expose"]:  # the interpreter's directories and the target
            expose(path)
    readonly = readonly_tree()  # before the tmpfs, the one mount left writable
    opts = b"size=%d,mode=0700,uid=%d,gid=%d" % (cfg["max_file_bytes"] + len(code) + 2**16, owner, owner)
    source = os.fsencode(os.path.basename(workdir))  # names the call
    mount(source, os.fsencode(target), b"tmpfs", NOSUID | NODEV, opts)
    os.chdir(target)
    os.environ["HOME"] = os.environ["TMPDIR"] = target
    write_file(cfg["snippet"], code, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    if not readonly:
        remount_readonly(target)


def isolate_fs(workdir, uid):
    try:
        setup_fs(workdir, uid)
        return True
    except OSError:
        return False  # (partly) not isolated: "fs" is not reported


def init(workdir, uid, own_mounts, tokens):
    """PID 1 of the new namespace (or a plain child): isolate what the kernel allows, check the policy, run
    the snippet. `uid` is the call's own uid when the host is root outside a user namespace, else our own."""
    fs = own_mounts and isolate_fs(workdir, uid)
    for cap in range(LAST_CAP + 1):
        prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: no capability survives exec
    if uid != os.getuid():
        if not fs:
            os.chown(".", uid, uid)  # the host's working directory
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        tokens.add("uid")
    if fs and os.getuid() != 0:  # uid 0 could still open root's device nodes
        tokens.add("fs")
    report(*tokens & {"fs", "uid"})
    if not all(tokens & set(group) for group in cfg["require"]):
        report("refused")
        os._exit(0)
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the wrapper (after setresuid, which clears it)
    prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, cfg["cpu_s"]),
                       (resource.RLIMIT_AS, cfg["memory_mb"] * 2**20),
                       (resource.RLIMIT_FSIZE, cfg["max_file_bytes"]),
                       (resource.RLIMIT_NPROC, cfg["max_processes"] or (64 if "cgroup" in tokens else 16))):
        resource.setrlimit(res, (value, value))
    drop_capabilities()
    os.close(status)  # the snippet must not write isolation tokens
    run_snippet()


def drop_capabilities():
    """Empty effective, permitted, inheritable and ambient sets: what the exec of a snippet with an empty
    bounding set used to give uid 0 in a user namespace (a uid other than 0 has none left already)."""
    prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    if capset(CAP_HEADER, CAP_DATA) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "capset")


def run_snippet():
    """Run snippet.py as `python -I -B -X utf8 snippet.py` would, in this (already started, forked)
    interpreter: a fresh __main__ and argv, the interpreter's own file parser and runner, SystemExit and
    tracebacks as for a script, then the observable part of the interpreter's exit. Never returns."""
    path = os.path.abspath(cfg["snippet"])
    sys.argv[:] = [cfg["snippet"]]
    sys.orig_argv[:] = [cfg["python"], "-I", "-B", "-X", "utf8", cfg["snippet"]]
    main = type(sys)("__main__")
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    main.__dict__.update(__builtins__=sys.modules["builtins"], __annotations__={}, __file__=path,
                         __cached__=None, __loader__=loader)
    sys.modules["__main__"] = main
    fp = fopen(path.encode(), b"rb")
    if not fp:
        print(f"{cfg['python']}: can't open file {path!r}", file=sys.stderr)
        exit_like_python(2)
    code, interrupted = 0, False
    try:
        run_file(fp, path.encode(), 257, main.__dict__, main.__dict__, 1, None)  # Py_file_input, close fp
    except SystemExit as e:
        flush_io()
        code = system_exit_code(e)
    except BaseException as e:
        flush_io()
        code, interrupted = 1, isinstance(e, KeyboardInterrupt)
        print_exception(e)
    else:
        flush_io()
    for name in ("__file__", "__cached__"):  # as the interpreter's runner leaves __main__
        main.__dict__.pop(name, None)
    exit_like_python(code, interrupted)


def flush_io():
    """As the interpreter's runner does once the script is done, before reporting its exception."""
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except BaseException:
            pass


def print_exception(e):
    """What the interpreter prints for an uncaught exception: sys.excepthook with the snippet's frames only."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code in (run_snippet.__code__, exit_like_python.__code__):
        tb = tb.tb_next  # our frames: the interpreter's runner is C code, which has none
    e.__traceback__ = tb
    sys.last_type, sys.last_value, sys.last_traceback = type(e), e, tb
    try:
        sys.excepthook(type(e), e, tb)
    except BaseException as hook_error:  # printed as the interpreter does: no frames, no chain
        print("Error in sys.excepthook:", file=sys.__stderr__)
        traceback.print_exception(type(hook_error), hook_error, None, chain=False, file=sys.__stderr__)
        print("\nOriginal exception was:", file=sys.__stderr__)
        traceback.print_exception(type(e), e, tb, file=sys.__stderr__)


def system_exit_code(e):
    """The exit status for an uncaught SystemExit, as the interpreter computes it (a non-integer is printed)."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if -2**63 <= code < 2**63 else 0xFF
    if sys.stderr is not None:
        try:
            sys.stderr.write(str(code) + "\n")
        except BaseException:
            pass
    return 1


def exit_like_python(code, interrupted=False):
    """The interpreter's exit as a script sees it: non-daemon threads joined, atexit handlers run, __main__'s
    globals released and a garbage collection (so their __del__ run), stdout and stderr flushed (120 if that
    fails); 130 (or SIGINT) after an uncaught KeyboardInterrupt. Not done: the teardown of every other module,
    which would copy every page this process shares with the zygote for nothing (a __del__ that runs only
    when some other module's globals are cleared is not called)."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        if "atexit" in sys.modules:
            sys.modules["atexit"]._run_exitfuncs()
        if isinstance(main := sys.modules.get("__main__"), type(sys)):
            main.__dict__.clear()
        gc.collect()  # the zygote's objects are frozen (gc.freeze): only the snippet's are visited
    except BaseException as e:
        print_exception(e)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BaseException:
            code = 120 if code == 0 else code
    if interrupted:  # as the interpreter does: die by SIGINT (ignored by a PID 1), else exit 130
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    os._exit(code)


def set_environment(env):
    """Make os.environ, posix.environ (its data: the same dict) and the C environment exactly `env`, changing
    only what differs from the zygote's (the host starts it with the same names)."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def wrapper(zygote):
    """The call's wrapper, forked by the zygote with fds 0 (/dev/null), 1 and 2 (output) and 3 (status) in the
    call's directory and environment: own session, cgroup, namespaces, then the init; dies like it."""
    os.setsid()
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the zygote
    if os.getppid() != zygote:
        os._exit(125)  # the zygote is already gone
    if not cfg["in_workdir"]:
        os.chdir(cfg["workdir"])  # the zygote moved there (and set the call's environment) before the fork
    tokens = {"cgroup"} if join_cgroup() else set()
    namespaces = unshare()
    tokens |= namespaces - {"mnt"}
    report(*tokens)
    uid = 0x40000000 + os.getpid() if root and "userns" not in namespaces else os.getuid()
    pid = os.fork()
    if pid == 0:
        try:
            init(os.getcwd(), uid, "mnt" in namespaces, tokens)
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


class Zygote:
    """The zygote's loop: fork a wrapper per request, report its pid and return code, reap it when told."""

    def __init__(self, ctl):
        self.ctl, self.parent, self.pid = ctl, os.getppid(), os.getpid()
        self.poll = select.epoll()
        self.poll.register(ctl.fileno(), select.EPOLLIN)
        self.calls = {}  # reply fd and pidfd -> [pid, pidfd, reply fd]

    def serve(self):
        while True:
            events = self.poll.poll(1.0)
            if os.getppid() != self.parent:
                self.stop()  # the host died (and a fork of it still holds the socket)
            for fd, _ in events:
                if fd == self.ctl.fileno():
                    self.request()
                elif (call := self.calls.get(fd)) and fd == call[1]:
                    self.exited(call)
                elif call:
                    self.release(call)

    def request(self):
        msg, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 3)
        if not msg:
            self.stop()  # the host closed the socket pair or died
        reply, out, status_w = fds
        try:  # here: the call's processes run as little Python as they can
            config = prepare(json.loads(msg))
        except Exception as e:  # reported by the wrapper, as if it had failed there (exit code 126)
            config = e
        pid = os.fork()
        if pid == 0:
            self.become_wrapper(config, out, status_w)
        os.chdir("/")  # not to pin the call's directory
        os.close(out)
        os.close(status_w)
        call = [pid, os.pidfd_open(pid), reply]
        self.calls[reply] = self.calls[call[1]] = call
        self.poll.register(reply, select.EPOLLIN)
        self.poll.register(call[1], select.EPOLLIN)
        try:
            os.write(reply, b"%d" % pid)
        except OSError:
            self.release(call)  # the host gave up on the call already

    def become_wrapper(self, config, out, status_w):
        global cfg, root
        try:
            self.poll.close()
            self.ctl.close()
            os.dup2(out, 1)
            os.dup2(out, 2)
            if status_w != status:
                os.dup2(status_w, status)
            os.set_inheritable(status, False)
            os.closerange(status + 1, 1 << 20)  # other calls' descriptors, the socket pair's
            if isinstance(config, Exception):
                raise config
            cfg, root = config, os.getuid() == 0
            wrapper(self.pid)
        except BaseException:
            traceback.print_exc()
        os._exit(126)

    def exited(self, call):
        """Report the wrapper's return code; it stays a zombie (its pid and group id reserved) until released."""
        self.poll.unregister(call[1])
        info = os.waitid(os.P_PIDFD, call[1], os.WEXITED | os.WNOWAIT)
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        try:
            os.write(call[2], b"exit %d" % code)
        except OSError:
            pass  # the host gave up on the call: released below

    def release(self, call):
        """The host is done with the call: kill the wrapper if still running, reap it, forget it."""
        pid, pidfd, reply = call
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        for fd in (pidfd, reply):
            if fd in self.calls:
                try:
                    self.poll.unregister(fd)
                except (KeyError, OSError):
                    pass
                del self.calls[fd]
                os.close(fd)

    def stop(self):
        for pid, pidfd, _ in list(self.calls.values()):
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)


def main():
    if __name__ != "__main__":
        return  # imported (arpo.tools._sandbox_child), not run as the zygote: do nothing
    zygote = Zygote(socket.socket(fileno=int(sys.argv[1])))
    gc.freeze()  # what the zygote holds is never collected in a call, so its pages stay shared
    zygote.serve()


main()
