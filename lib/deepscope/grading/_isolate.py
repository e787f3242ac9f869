"""Isolating a sandbox with Linux namespaces: the view of the filesystem, the locks, the limits.

Runs in the sandbox's processes (`_child`), before any student code, as the steps of
`isolate_namespaces` (the bubblewrap path reuses `drop_privileges`, `ipc_limits` and
`set_limits`). Each step raises `SetupError` with the reason when the kernel refuses it; the
sandbox then reports the reason and runs no student code. See `sandbox` for the threat model and
`sandbox.view` for the operations building the view.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024,
             "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
_SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41,
                   "loongarch64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217}
NOBODY = 65534


class SetupError(RuntimeError):
    """A step of building the sandbox failed (student code never runs)."""



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


def ipc_limits(limits: dict) -> None:
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
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    _libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: it may write its own uid_map
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNS, "user, mount")
    _map_ids(0, NOBODY, NOBODY)


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
    ipc_limits(plan["limits"])
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


def close_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def die_with_parent() -> None:
    """Be killed when the supervisor dies (PR_SET_PDEATHSIG)."""
    _libc().prctl(1, 9, 0, 0, 0)
