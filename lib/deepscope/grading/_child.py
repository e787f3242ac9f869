"""The sandboxed side of grading: the zygote, the supervisor, and the child that runs ONE
question of a submission. (The threat model and the grader's side are in `sandbox`.)

Processes, for each question::

    grader ──socket──> zygote: imported torch once; forks a supervisor per question (`serve`)
                         └─ supervisor: outside the sandbox; kills it when the grader closes
                            its lifeline or when the sandbox's processes together use more
                            memory than allowed; its exit status is the sandbox's (`supervise`)
                              └─ sandbox: pid 1 of fresh pid, ipc, net, uts and mount
                                 namespaces (or `bwrap`, which makes the same ones); builds the
                                 view of the filesystem, drops every privilege, lowers its
                                 limits, then runs the student's code (`sandboxed`)

Only after the sandbox is complete does the child send its first frame, ``R`` (ready): if any
step fails it sends ``G`` with the reason and ends, so student code never runs half-isolated.
Then it executes the answer cells and calls the student's function on the inputs the grader
sent, streaming back plain data (`protocol`). Nothing is judged here.

This module runs where ``deepscope`` cannot be imported (it is absent from the sandbox's view):
the zygote and the bubblewrap sandbox load it, and `protocol`, by file path.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import linecache
import os
import platform
import resource
import select
import signal
import struct
import sys
import traceback

import torch

try:
    from . import protocol
except ImportError:  # loaded by file path (the zygote, the bubblewrap sandbox): no package
    import _sandbox_protocol as protocol  # type: ignore[no-redef]

MAX_MESSAGE = protocol.MAX_MESSAGE
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024,
             "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
_SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41,
                   "loongarch64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217}
_NOBODY = 65534
SETUP_FAILED = 121  # exit code of a sandbox that could not be set up


class SetupError(RuntimeError):
    """A step of building the sandbox failed (student code never runs)."""


# ---------------------------------------------------------------------------------------------
# Running the student's code


def _where(err: BaseException) -> str:
    """The innermost frame of the student's code in a traceback, as 'cell N, line L: source'."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith("<cell")]
    if not frames:
        return ""
    frame = frames[-1]
    line = (frame.line or "").strip()
    return f"{frame.filename.strip('<>')}, line {frame.lineno}" + (f": {line}" if line else "")


def describe_error(err: BaseException) -> dict:
    """Return a JSON-able description of an exception raised by the student's code."""
    if isinstance(err, SystemExit):
        message = f"the code called exit({err.code!r}); a graded function must return a value"
    elif isinstance(err, NotImplementedError):
        message = "not implemented yet (the function still raises NotImplementedError)"
    else:
        try:
            message = f"{type(err).__name__}: {err}"
        except Exception:  # noqa: BLE001 - a hostile __str__ must not break the report
            message = type(err).__name__
        if isinstance(err, NameError):
            message += (" (answer cells run on their own, after only the assignment's standard "
                        "imports: import anything else inside your answer cell)")
        if isinstance(err, ModuleNotFoundError) and str(err.name).split(".")[0] in _FORBIDDEN:
            message += (" (the reference library and peer libraries are not available to "
                        "answers: the grader compares your code with them, so implement it "
                        "yourself; torch, numpy, scipy, math and the standard library are fine)")
    try:
        where = _where(err)
    except Exception:  # noqa: BLE001 - a hostile traceback must not break the report
        where = ""
    return {"type": type(err).__name__[:200], "message": message[:MAX_MESSAGE],
            "where": where[:MAX_MESSAGE]}


def execute_cells(cells: list[dict], namespace: dict, channel=None) -> list:
    """Execute answer cells in order in ``namespace``; return the top-level errors (JSON-able).

    An error at a cell's top level does not stop the others: the graded function may be defined
    before the line that failed.
    """
    errors = []
    for cell in cells:
        filename = f"<cell {cell['number']}>"
        linecache.cache[filename] = (len(cell["source"]), None,
                                     cell["source"].splitlines(True), filename)
        if channel is not None:
            channel.send_json(b"P", {"cell": cell["number"]})
        try:
            exec(compile(cell["source"], filename, "exec"), namespace)  # noqa: S102
        except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            error = {"cell": cell["number"], **describe_error(err)}
            errors.append(error)
            if channel is not None:
                channel.send_json(b"E", error)
    return errors


def _differentiated(fn, args, kwargs, positions):
    """Call ``fn`` with the arguments at ``positions`` as fresh leaves; return (value, grads)."""
    args = list(args)
    for i in positions:
        args[i] = torch.Tensor.detach(args[i]).clone().requires_grad_(True)
    value = fn(*args, **kwargs)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        return value  # the judge reports the wrong type
    if not value.requires_grad:
        raise ValueError("the result is not differentiable with respect to its inputs (was it "
                         "computed with .item(), .detach(), NumPy or under torch.no_grad()?)")
    leaves = [args[i] for i in positions]
    grads = torch.autograd.grad(value.reshape(()), leaves, allow_unused=True)
    grads = tuple(torch.zeros_like(a) if g is None else g for a, g in zip(leaves, grads))
    return value.detach(), grads


def call_result(index: int, fn, call) -> bytes:
    """Call the student's function once; return the ``C`` frame body (outputs or the error).

    ``call`` is ``(args, kwargs)`` or ``(args, kwargs, positions)``: with positions, the result
    comes back as ``(value, gradients with respect to those positional arguments)``.
    """
    args, kwargs, *rest = call
    positions = rest[0] if rest else ()
    try:
        value = _differentiated(fn, args, kwargs, positions) if positions else fn(*args,
                                                                                  **kwargs)
        return protocol.call_body(index, ok=value)
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
        return protocol.call_body(index, error=describe_error(err))


_FORBIDDEN: tuple[str, ...] = ("deepscope",)


def run(job: dict, channel) -> None:
    """Execute the preamble and the answer cells, then every call of the graded function."""
    global _FORBIDDEN
    _FORBIDDEN = tuple(job.get("forbidden", _FORBIDDEN))
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(job["preamble"], "<preamble>", "exec"), namespace)  # noqa: S102
    execute_cells(job["cells"], namespace, channel)
    for source in job.get("substitutes", ()):  # correct versions of other graded functions
        exec(compile(source, "<reference>", "exec"), namespace)  # noqa: S102
    fn = namespace.get(job["function"])
    missing = {"type": "NameError", "where": "",
               "message": f"no function named {job['function']!r} is defined by the cells"}
    for index, call in enumerate(job["calls"]):
        channel.send_json(b"P", {"call": index})
        channel.send(b"C", call_result(index, fn, call) if callable(fn)
                     else protocol.call_body(index, error=missing))


# ---------------------------------------------------------------------------------------------
# Building the sandbox: namespaces, the view of the filesystem, privileges, limits

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_char_p]
    return _LIBC


def _check(code: int, what: str) -> None:
    if code != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")


def _mount(source, target: str, fstype, flags: int, data: str | None = None) -> None:
    _check(_libc().mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                         flags, data and data.encode()), f"mount {target}")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as file:
            file.write(text)
    except OSError as err:
        raise SetupError(f"writing {path}: {err.strerror}") from err


def _unshare(flags: int, what: str) -> None:
    _check(_libc().unshare(flags), f"unshare({what})")


def _map_ids(inside: int, uid: int, gid: int) -> None:
    """Map ``inside`` in the user namespace just entered to the outside uid/gid."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{inside} {uid} 1")
    _write("/proc/self/gid_map", f"{inside} {gid} 1")


def enter_outer_namespaces(root_user: bool) -> None:
    """In the supervisor: new pid (for its next child), ipc, net and uts namespaces; a new user
    namespace too unless the grader runs as root (root makes them without one)."""
    flags = _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWUTS
    if root_user:
        _unshare(flags, "pid, ipc, net, uts")
    else:
        uid, gid = os.geteuid(), os.getegid()
        _unshare(flags | _CLONE_NEWUSER, "user, pid, ipc, net, uts")
        _map_ids(0, uid, gid)


def _mount_flags(point: str) -> int:
    """The per-mount flags (nosuid, nodev, noexec, atime) of the mount at ``point``; a remount
    must keep them (the kernel locks them in a user namespace)."""
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == point:
                return sum(_MS_FLAGS.get(o, 0) for o in fields[5].split(",")) & ~_MS_RDONLY
    return 0


def _mounts_under(point: str) -> list[str]:
    """Mount points at or below ``point`` (a recursive bind brings submounts along)."""
    found = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == point or target.startswith(point.rstrip("/") + "/"):
                found.append(target)
    return found


def _make_point(path: str, directory: bool) -> None:
    if directory:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            open(path, "w").close()


def _source_flags(path: str) -> int:
    """The per-mount flags of the mount holding ``path`` (statvfs), which a remount keeps."""
    flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in ((8, _MS_NOEXEC), (1024, 1024), (2048, 2048), (4096, 1 << 21))
               if flag & st)


def _bind(source: str, target: str, read_only: bool, devices: bool = False,
          recursive: bool = True) -> None:
    """Bind ``source`` at ``target`` (with its submounts), each remounted nosuid (nodev unless
    ``devices``) and read-only if asked."""
    _make_point(target, os.path.isdir(source))
    base = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | (0 if devices else _MS_NODEV) | (
        _MS_RDONLY if read_only else 0)
    if not recursive:
        _mount(source, target, None, _MS_BIND)
        _mount(None, target, None, base | _source_flags(source))
        return
    _mount(source, target, None, _MS_BIND | _MS_REC)
    for point in _mounts_under(target):
        _mount(None, point, None, base | _mount_flags(point))


def _select(directory: str, entries: list, hidden: list, root: str, scratch: str) -> None:
    """Show a package directory without its ``hidden`` entries: an empty directory in a
    forbidden package's place would still import (as a namespace package), so its name must be
    absent. One read-only overlay whose top layer holds a whiteout per hidden name (Linux 5.11
    or later); where overlays are refused, a tmpfs with each kept entry bound into it."""
    target = root + directory
    try:
        os.makedirs(scratch, exist_ok=True)
        mode = os.stat(directory).st_mode & 0o7777  # the merged directory shows the top layer's
        _mount("tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size=64k,mode={mode:o}")
        for name in hidden:
            os.mknod(os.path.join(scratch, name), 0o600 | 0o020000, os.makedev(0, 0))
        _mount("overlay", target, "overlay", _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
               f"lowerdir={scratch}:{directory}")
        return
    except (SetupError, OSError):
        pass
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _source_flags(
        directory)
    _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=256k,nr_inodes=65536,mode=755")
    for name, kind in entries:
        point = os.path.join(target, name)
        if kind.startswith("link:"):
            os.symlink(kind[5:], point)
            continue
        if kind == "dir":
            os.mkdir(point)
        else:
            os.close(os.open(point, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(os.path.join(directory, name), point, None, _MS_BIND | _MS_REC)
        _mount(None, point, None, flags)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _apply(op: list, root: str, scratch: str = "") -> None:
    """Carry out one operation of the plan's view (see `sandbox.view`) under ``root``
    (``scratch``: a directory outside it for helper mounts)."""
    kind, *args = op
    if kind == "ro":
        _bind(args[0], root + args[1], read_only=True)
    elif kind == "dev":
        _bind(args[0], root + args[0], read_only=False, devices=True,
              recursive=os.path.isdir(args[0]))
    elif kind == "symlink":
        os.makedirs(os.path.dirname(root + args[1]), exist_ok=True)
        os.symlink(args[0], root + args[1])
    elif kind == "tmpfs":
        path, size, inodes, mode = args
        os.makedirs(root + path, exist_ok=True)
        _mount("tmpfs", root + path, "tmpfs", _MS_NOSUID | _MS_NODEV,
               f"size={size},nr_inodes={inodes},mode={mode:o}")
    elif kind == "select":
        _select(args[0], args[1], args[2], root, f"{scratch}/{abs(hash(args[0]))}")
    elif kind == "proc":  # (its kernel settings become read-only in `isolate_namespaces`)
        os.makedirs(root + "/proc", exist_ok=True)
        _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    elif kind == "remount_ro":
        _mount(None, root + args[0], None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID
               | _MS_NODEV)
    else:
        raise SetupError(f"unknown view operation {kind!r}")


def _ipc_limits(limits: dict) -> None:
    """Cap SysV shared memory, semaphores and message queues in the new ipc namespace (they
    live outside any process, so no rlimit counts them); all of it dies with the namespace."""
    pages = max(1, int(limits["sysv_bytes"]) // resource.getpagesize())
    for path, value in (("kernel/shmmax", limits["sysv_bytes"]), ("kernel/shmall", pages),
                        ("kernel/shmmni", 16), ("kernel/msgmni", 16), ("kernel/sem",
                                                                      "32 256 32 16"),
                        ("fs/mqueue/queues_max", 4), ("fs/mqueue/msg_max", 16),
                        ("fs/mqueue/msgsize_max", 8192)):
        if os.path.exists(f"/proc/sys/{path}"):
            _write(f"/proc/sys/{path}", str(value))


def _pivot(root: str) -> None:
    """Make ``root`` the root of this mount namespace and detach the old one entirely."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: unsupported architecture {platform.machine()}")
    os.makedirs(root + "/.oldroot", exist_ok=True)
    _check(_libc().syscall(number, root.encode(), (root + "/.oldroot").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc().umount2(b"/.oldroot", 2), "detaching the old root")  # MNT_DETACH
    os.rmdir("/.oldroot")
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_privileges() -> None:
    """Give up every capability for good: empty bounding set (nothing to regain by exec), no
    ambient capabilities, empty capability sets, and no_new_privs."""
    libc = _libc()
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (fails harmlessly past the last cap)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    _check(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()),
           "dropping capabilities")
    _check(libc.prctl(38, 1, 0, 0, 0), "setting no_new_privs")  # PR_SET_NO_NEW_PRIVS
    with open("/proc/self/status") as file:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in file if
                                           line.startswith("Cap"))}
    if any(int(caps.get(k, "1"), 16) for k in ("CapEff", "CapPrm", "CapBnd")):
        raise SetupError(f"capabilities remain after dropping them: {caps}")


def _become_nobody() -> None:
    """Leave root (uid 0 bypasses the process cap and owns kernel settings) for ``nobody``,
    inside a user namespace of its own."""
    os.setgroups([])
    os.setgid(_NOBODY)
    os.setuid(_NOBODY)
    _libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: it may write its own uid_map
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNS, "user, mount")
    _map_ids(0, _NOBODY, _NOBODY)


def isolate_namespaces(plan: dict, root_user: bool) -> None:
    """In the sandbox (pid 1 of its pid namespace): build the view and pivot into it, cap ipc,
    forbid further user namespaces, lock the mounts (a nested user namespace) and drop every
    privilege."""
    _unshare(_CLONE_NEWNS, "mount")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing propagates back to the host
    _check(_libc().sethostname(b"sandbox", 7), "sethostname")
    root = plan["root"]
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    for op in plan["ops"]:
        _apply(op, root, plan["scratch"])
    _ipc_limits(plan["limits"])
    _pivot(root)
    if root_user:
        _become_nobody()
    _write("/proc/sys/user/max_user_namespaces", "1")
    for name in ("/proc/sys", "/proc/sysrq-trigger"):  # kernel settings: read-only in any case
        if os.path.exists(name):
            _bind(name, name, read_only=True, recursive=False)
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNS, "user, mount (locks the mounts)")
    _map_ids(0, 0, 0)
    drop_privileges()
    os.chdir("/tmp")


def set_limits(limits: dict, write_files: bool = True) -> None:
    """Lower this process's resource limits (children inherit them; none can raise them)."""
    values = {"RLIMIT_CORE": 0, "RLIMIT_NOFILE": 256, "RLIMIT_MSGQUEUE": 64 * 2**10,
              "RLIMIT_MEMLOCK": 64 * 2**10, "RLIMIT_CPU": limits.get("cpu_seconds"),
              "RLIMIT_AS": limits.get("memory_bytes"), "RLIMIT_NPROC": limits.get("tasks"),
              "RLIMIT_FSIZE": limits.get("tmp_bytes") if write_files else 0}
    for name, value in values.items():
        if value is not None:
            hard = resource.getrlimit(getattr(resource, name))[1]
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError) as err:
                raise SetupError(f"setrlimit {name}: {err}") from err


def _close_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# The processes: the sandbox, the supervisor and the zygote


def _start_job(job_fd: int, result_fd: int) -> tuple[dict, protocol.Channel]:
    """Read the job (sent by the grader: trusted) and report ready: the time limit starts."""
    with os.fdopen(job_fd, "rb") as file:
        job_data = file.read()
    job = torch.load(io.BytesIO(job_data), weights_only=False)
    channel = protocol.Channel(result_fd)
    channel.send(b"R")
    return job, channel


def _serve_job(job: dict, channel: protocol.Channel) -> None:
    code = 0
    try:
        run(job, channel)
        channel.send(b"D")
    except BaseException as err:  # noqa: BLE001 - report, then leave without cleanup
        try:
            channel.send_json(b"E", {"cell": None, **describe_error(err)})
        except BaseException:  # noqa: BLE001
            code = 3
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)  # skip atexit handlers and finalizers a submission may have registered


def _redirect_output(output_fd: int) -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)


def sandboxed(plan: dict, job_fd: int, result_fd: int, output_fd: int, root_user: bool):
    """The sandbox's first process: isolate (per ``plan["mode"]``), then run the job; never
    returns. In bubblewrap mode it becomes ``bwrap``, whose sandbox runs `bubblewrap_main`."""
    channel = protocol.Channel(result_fd)
    try:
        _libc().prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the supervisor
        _redirect_output(output_fd)
        _close_fds({0, 1, 2, job_fd, result_fd})
        if plan["mode"] == "bubblewrap":
            _exec_bwrap(plan, root_user, job_fd, result_fd)
        if plan["mode"] == "namespaces":
            isolate_namespaces(plan, root_user)
        else:
            os.setpgid(0, 0)  # trusted mode: the supervisor kills the whole group
        set_limits(plan["limits"], write_files=plan["mode"] != "none")
        torch.set_num_threads(1)
        job, channel = _start_job(job_fd, result_fd)
    except BaseException as err:  # noqa: BLE001 - whatever failed, no student code runs
        channel.send(b"G", f"{type(err).__name__}: {err}"[:MAX_MESSAGE].encode())
        os._exit(SETUP_FAILED)
    _serve_job(job, channel)


def _exec_bwrap(plan: dict, root_user: bool, job_fd: int, result_fd: int) -> None:
    """Exec ``bwrap`` with the plan's arguments. As root, first become ``nobody`` (inside
    bwrap, uid 0 of the host may write kernel settings); the sources of the view are opened
    before, and bwrap binds them through /proc/self/fd."""
    fds = {"@JOB_FD@": job_fd, "@RESULT_FD@": result_fd}
    argv = [str(fds.get(arg, arg)) for arg in plan["bwrap"]]
    for fd in fds.values():
        os.set_inheritable(fd, True)
    if root_user:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for i, arg in enumerate(argv[:-1]):
            if arg in ("--ro-bind", "--dev-bind") and argv[i + 1].startswith("/"):
                fd = os.open(argv[i + 1], os.O_PATH)
                os.set_inheritable(fd, True)
                argv[i + 1] = f"/proc/self/fd/{fd}"
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    os.execve(argv[0], argv, plan["env"])


def bubblewrap_main(job_fd: int, result_fd: int, plan: dict) -> None:  # pragma: no cover
    """The sandbox's program inside ``bwrap`` (which made the namespaces and the view): cap
    ipc, drop the two capabilities bwrap kept for that, lower the limits, run the job."""
    channel = protocol.Channel(result_fd)
    try:
        # bwrap passes on every descriptor it inherited, the O_PATH ones it bound from
        # included: through those the host's directories would be reachable.
        _close_fds({0, 1, 2, job_fd, result_fd})
        _ipc_limits(plan["limits"])
        drop_privileges()
        set_limits(plan["limits"])
        torch.set_num_threads(1)
        job, channel = _start_job(job_fd, result_fd)
    except BaseException as err:  # noqa: BLE001 - whatever failed, no student code runs
        channel.send(b"G", f"{type(err).__name__}: {err}"[:MAX_MESSAGE].encode())
        os._exit(SETUP_FAILED)
    _serve_job(job, channel)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/TID/children), without bubblewrap's
    own small helper processes."""
    found, todo = [], [pid]
    while todo and len(found) < 4096:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/comm") as file:
                if file.read().strip() != "bwrap":
                    found.append(current)
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as file:
                    todo.extend(int(c) for c in file.read().split())
        except OSError:
            continue
    return found


def _pss(pids: list[int]) -> int:
    """Proportional set size of ``pids`` together, in bytes (shared pages counted once)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as file:
                for line in file:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def _wait_for(pid: int, lifeline: int, memory: int | None, control: int) -> int:
    """Watch the sandbox until it ends, the lifeline closes, or its processes together use more
    than ``memory`` bytes; kill it in the latter two cases. Return its wait status."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    watched = [lifeline] + ([pidfd] if pidfd is not None else [])
    while True:
        ready, _, _ = select.select(watched, [], [], 0.25 if pidfd is not None else 0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        over = 0
        if memory and not ready:
            tree = _tree(pid)
            if len(tree) > 1:  # one process alone is held by its address-space limit
                used = _pss(tree)
                over = used if used > memory else 0
        if lifeline in ready or over:
            if over:
                os.write(control, json.dumps({"memory": over}).encode() + b"\n")
            for kill in (lambda: os.kill(pid, signal.SIGKILL),
                         lambda: os.killpg(pid, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
            return os.waitpid(pid, 0)[1]


def supervise(request: dict, fds: list[int]) -> None:  # pragma: no cover - a forked process
    """The supervisor of one question: make the namespaces, start the sandbox, watch it, and
    end with its exit status (the zygote reports it to the grader)."""
    job_fd, result_fd, output_fd, control_fd, lifeline_fd = fds
    plan = request["plan"]
    os.setsid()
    root_user = os.geteuid() == 0
    try:
        if plan["mode"] == "namespaces":
            enter_outer_namespaces(root_user)
        pid = os.fork()
    except (SetupError, OSError) as err:
        protocol.Channel(result_fd).send(b"G", str(err)[:MAX_MESSAGE].encode())
        os._exit(SETUP_FAILED)
    if pid == 0:
        os.close(control_fd)
        os.close(lifeline_fd)
        sandboxed(plan, job_fd, result_fd, output_fd, root_user)
    for fd in (job_fd, result_fd, output_fd):
        os.close(fd)
    memory = plan["limits"].get("tree_bytes")
    code = os.waitstatus_to_exitcode(_wait_for(pid, lifeline_fd, memory, control_fd))
    if code < 0:  # die of the same signal, so the grader can name it
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def serve(sock_fd: int) -> None:  # pragma: no cover - runs in the zygote process
    """Fork a supervisor per request received on the Unix socket ``sock_fd``; report statuses.

    A request is a JSON message ``{"plan": {...}}`` with six file descriptors attached: the job
    (readable), the result, output, status and control pipes, and the lifeline (readable; the
    grader holds its other end). The zygote answers with the supervisor's pid and, when it reaps
    it, writes its exit status (4 bytes, signed; negative for a signal) to the status pipe and
    closes it. The zygote exits when the grader closes the socket.
    """
    import socket

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader handles Ctrl-C
    sock = socket.socket(fileno=sock_fd)
    status_fds: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([sock], [], [], 0.05)
        while status_fds:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            fd = status_fds.pop(pid, None)
            if fd is not None:
                try:
                    os.write(fd, struct.pack(">i", os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                os.close(fd)
        if not readable:
            continue
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 6)
        except OSError:
            message, fds = b"", []
        if not message:
            return
        request = json.loads(message)
        job_fd, result_fd, output_fd, status_fd, control_fd, lifeline_fd = fds
        pid = os.fork()
        if pid == 0:
            sock.close()
            for fd in (status_fd, *status_fds.values()):
                os.close(fd)
            supervise(request, [job_fd, result_fd, output_fd, control_fd, lifeline_fd])
        for fd in (job_fd, result_fd, output_fd, control_fd, lifeline_fd):
            os.close(fd)
        status_fds[pid] = status_fd
        sock.sendall(struct.pack(">i", pid))
