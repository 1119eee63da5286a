"""The sandbox's wrapper process (see ``python_sandbox``): the host runs this file by path as
``python -I -S _sandbox_child.py FD`` in the call's working directory, with a scrubbed environment, the JSON config on
stdin and the status pipe's fd as argv[1]. It joins the call's cgroup, unshares the namespaces and forks the
init, which isolates the filesystem, drops privileges, sets the rlimits, checks the isolation policy and execs
the snippet.

Standard library only, nothing of ``arpo``: it runs in an isolated interpreter (``-I -S``: no site-packages,
no environment variables, no user site) where ``arpo`` is not importable. The source ends with the bare
``main()`` call (tests insert code before it); imported as a module, it does nothing.
"""
import ctypes, json, os, re, resource, signal, sys, traceback

NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
NAMESPACES = ((NEWNS, "mnt"), (NEWPID, "pid"), (NEWNET, "net"), (NEWIPC, "ipc"))
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
KEEP = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21,
        "strictatime": 1 << 24}
libc = ctypes.CDLL(None, use_errno=True)
cfg, status, root = {}, -1, False  # set by main(): config (stdin), status pipe (argv[1]), host is root


def report(*tokens):
    os.write(status, (" ".join(tokens) + " ").encode())


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def try_unshare(flag):
    return libc.unshare(flag) == 0


def unshare():
    """New namespaces, one by one: directly when any is allowed, else in a new user namespace that maps our
    own ids. Returns the names of those created ("mnt": mount namespace, "userns")."""
    made = {name for flag, name in NAMESPACES if try_unshare(flag)}
    if made or not try_unshare(NEWUSER):
        return made
    uid, gid = os.getuid(), os.getgid()
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return {"userns"} | {name for flag, name in NAMESPACES if try_unshare(flag)}


def join_cgroup():
    try:
        for procs in cfg["cgroup"]:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
    except OSError:
        return False
    return bool(cfg["cgroup"])


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
    """Only ever called in our own mount namespace: fresh read-only /proc, the code alone in a private tmpfs
    at /tmp (the working directory from then on), everything else read-only."""
    with open(cfg["snippet"], "rb") as f:  # relative to the working directory, before any mount hides it
        code = f.read()
    mount(None, "/", None, REC | PRIVATE)
    mount("proc", "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC)
    python = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
              os.path.dirname(os.path.realpath(cfg["python"])),
              os.path.dirname(os.path.abspath(cfg["python"]))}  # a venv's bin/ (its python is a symlink)
    under_tmp = any(p == "/tmp" or p.startswith("/tmp/") for p in python)
    target = workdir if under_tmp or not os.path.isdir("/tmp") else "/tmp"
    if owner != os.getuid():
        for path in python | {target}:
            expose(path)
    size = cfg["max_file_bytes"] + len(code) + 2**16
    opts = f"size={size},mode=0700,uid={owner},gid={owner}"
    mount(os.path.basename(workdir), target, "tmpfs", NOSUID | NODEV, opts)  # source: names the call
    os.chdir(target)
    os.environ["HOME"] = os.environ["TMPDIR"] = target
    with open(cfg["snippet"], "wb") as f:
        f.write(code)
    remount_readonly(target)


def isolate_fs(workdir, uid):
    try:
        setup_fs(workdir, uid)
        return True
    except OSError:
        return False  # (partly) not isolated: "fs" is not reported


def init(workdir, uid, own_mounts, tokens):
    """PID 1 of the new namespace (or a plain child): isolate what the kernel allows, check the policy, exec
    the snippet. `uid` is the call's own uid when the host is root outside a user namespace, else our own."""
    fs = own_mounts and isolate_fs(workdir, uid)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last): no capability survives exec
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
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the wrapper (after setresuid, which clears it)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_CPU, cfg["cpu_s"]),
                       (resource.RLIMIT_AS, cfg["memory_mb"] * 2**20),
                       (resource.RLIMIT_FSIZE, cfg["max_file_bytes"]),
                       (resource.RLIMIT_NPROC, cfg["max_processes"] or (64 if "cgroup" in tokens else 16))):
        resource.setrlimit(res, (value, value))
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-X", "utf8", cfg["snippet"]], os.environ)


def main():
    global cfg, status, root
    if __name__ != "__main__":
        return  # imported (arpo.tools._sandbox_child), not run as the wrapper: do nothing
    cfg, status = json.load(sys.stdin), int(sys.argv[1])
    root = os.getuid() == 0
    os.set_inheritable(status, False)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the host thread that started us
    if os.getppid() != cfg["host_pid"]:
        os._exit(125)  # the host is already gone
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
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


main()
