"""Run one question of a submission in a sandbox, and keep every limit on the grader's side.

THREAT MODEL
============

Submissions are hostile. An answer cell may try to read other files (classmates' notebooks, the
masters, the teacher's private check file, the home directory, the grader's /proc), import the
reference library or a peer library, forge messages to the grader (reset its timer, forge report
fields, flood the report), exhaust memory, processes, disk or time, leave processes or shared
memory behind, signal the grader, reach the network, read the teacher's environment, or inject
terminal escapes. (Malformed notebooks are `intake`'s concern; spreadsheet formulas the
report's.) The grader runs each question in a fresh sandbox, on one of three paths:

``namespaces`` (Linux where unprivileged user namespaces are allowed) and ``bubblewrap``
(``bwrap``, where they are refused but bubblewrap works) apply the same policy:

- *Files.* A fresh root holding only the system's /usr and library directories (and from /etc
  the dynamic linker's cache, the time zone and the font configuration), the Python
  installation and its site-packages, read-only, with ``deepscope``, ``captum``, ``pyhessian``
  and ``loss_landscapes`` absent (their package directories are rebuilt without their code,
  metadata and ``.pth`` hooks, so not even an empty name is left to import); a private
  writable /tmp (`TMP_BYTES`, 16384 files; HOME points there) and /dev/shm (`SHM_BYTES`); /dev
  with null, zero, full, random and urandom; a fresh /proc of its own pid namespace with
  /proc/sys read-only. No other submission, master, check file, home or working directory. The
  mounts are locked and no capability remains, so the view cannot be changed. ``--device
  cuda`` adds NVIDIA's device nodes, the driver's library directories and /sys, read-only.
- *Processes.* Own pid, ipc, network (no interface up: no loopback, no network), uts and mount
  namespaces; no capabilities, no_new_privs, no further user namespaces; at most `TASKS`
  processes and threads (counted per sandbox on Linux 5.14 or later). A grader running as root
  runs the sandbox as ``nobody``. When the question ends, a supervisor outside the sandbox
  kills its first process, and the kernel kills every other one: nothing outlives it.
- *Memory.* An address-space limit per process (``--memory-limit``, not on CUDA), and the
  supervisor stops the question as soon as its processes together hold more (sampled every
  0.25 s while more than one runs): at worst the limit times `TASKS` for an instant, never
  more than the limit for longer. SysV and POSIX shared memory, message queues, /tmp and
  /dev/shm have caps of their own and die with the sandbox.
- *Environment.* Built from an allow-list (`environment`): no other variable of the
  teacher's environment reaches the sandbox.
- *Time and output.* Measured and counted by the grader (`run_job`, `protocol.Conversation`):
  nothing the sandbox sends extends a limit or writes a report field.

What a submission can still do there: use the CPU until its time limit, read the files of its
view (the Python installation, public anyway) and what /proc tells about the hardware, and
return any value for its own questions. Kernel exploits are out of scope: for that, run the
grader in a virtual machine as well. On the bubblewrap path, bwrap 0.8 cannot cap the number
of files in /tmp (their size is capped).

``none`` (only with ``--trust-submissions``, where neither path works): the student's code runs
as the teacher, limited only in address space, CPU time and file writes (none); it can read
what the teacher can, reach the network and signal the grader. Every report says so.

Where neither path works and ``--trust-submissions`` is not given, the grader refuses to grade
(`choose` explains why and what to install).

The report's ``sandbox`` field is written by the grader, from the path it chose and the limits
it set (`describe`), never by the sandbox: the sandbox either completes every step of its
isolation before it runs student code, or reports the failure and runs none.

How a question runs: `run_job` asks the zygote (a process that imported torch once) to fork a
supervisor, which makes the namespaces and forks the sandbox (`_child`, `_isolate`). The
grader's clock starts at the sandbox's first frame, "ready", which it sends after isolating
itself and before any student code runs; from then on the grader reads the result and output
pipes without ever blocking, checks each frame (`protocol.Conversation`), and at the time limit
closes the supervisor's lifeline: the supervisor kills the sandbox.
"""

from __future__ import annotations

import atexit
import glob
import io
import json
import os
import re
import select
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import protocol

#: Defaults of `run_job` (the CLI and `grade` expose the first two).
TIME_LIMIT = 60.0
MEMORY_LIMIT = 4 * 2**30
OUTPUT_LIMIT = 2**20
RESULT_LIMIT = 256 * 2**20
TASKS = 32
TMP_BYTES = 256 * 2**20
SHM_BYTES = 64 * 2**20
SYSV_BYTES = 64 * 2**20
STARTUP_GRACE = 120.0
PATHS = ("namespaces", "bubblewrap")
#: Set (e.g. on Ctrl-C) to stop every running question at once.
CANCEL = threading.Event()
_HERE = Path(__file__).resolve().parent
_HARNESS = {"_sandbox_protocol": _HERE / "protocol.py", "_sandbox_isolate": _HERE / "_isolate.py",
            "_sandbox_rules": _HERE / "rules.py", "_sandbox_child": _HERE / "_child.py"}
_IN_BWRAP = "/run/deepscope-sandbox"
_BOOT = """\
import importlib.util, json, sys
sys.path[:] = [p for p in sys.path if p]
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
load("_sandbox_protocol", sys.argv[1])
load("_sandbox_isolate", sys.argv[2])
load("_sandbox_rules", sys.argv[3])
child = load("_sandbox_child", sys.argv[4])
"""
_ZYGOTE = _BOOT + "child.serve(int(sys.argv[5]))\n"
_READ_BOOT = "import sys; exec(sys.stdin.read())"  # the zygote's command line shows no path
_INSIDE_BWRAP = _BOOT + "child.bubblewrap_main(int(sys.argv[5]), int(sys.argv[6]), " \
                        "json.loads(sys.argv[7]))\n"


class IsolationUnavailable(RuntimeError):
    """No isolation path works on this machine (and none was waived); the message says why
    and what to install."""


# ---------------------------------------------------------------------------------------------
# The policy: environment and view of the filesystem


def environment() -> dict[str, str]:
    """The sandbox's environment: an allow-list, plus what CUDA machines need to run."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
           "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/matplotlib"}
    for name in ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
                 "NVIDIA_DRIVER_CAPABILITIES"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _hidden(entry: str, forbidden) -> bool:
    """Whether a site-packages entry belongs to a forbidden package (code, dist-info, .pth)."""
    name = entry.lower().replace("-", "_")
    for prefix in ("__editable__.", "__editable___"):
        name = name.removeprefix(prefix)
    return any(name == f or name.startswith((f + ".", f + "_")) for f in
               (f.lower() for f in forbidden))


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _python_paths() -> list[str]:
    """The Python installation: bin/ and lib/ of every prefix, and the site directories."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                str(Path(os.path.realpath(sys.executable)).parent.parent)}
    paths = [os.path.join(p, sub) for p in sorted(prefixes)
             for sub in ("bin", "lib", "lib64", "pyvenv.cfg")]
    paths += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    # Package directories another environment lends through a .pth ``site.addsitedir`` (an
    # nbgrader venv running the book's torch): only *-packages directories, which `view` then
    # shows without the forbidden packages, never a source checkout on sys.path.
    paths += [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))
              and os.path.isdir(p)]
    return [os.path.abspath(p) for p in paths if os.path.lexists(p)]


def cuda_binds(dev: str = "/dev", libraries: str | None = None) -> list[list]:
    """What ``--device cuda`` adds to the view: NVIDIA's device nodes, the directories of the
    driver's libraries (from ``ldconfig -p``, or ``libraries``: text in that format, and
    LD_LIBRARY_PATH) and /sys, all read-only but the device nodes (usable, not writable as
    files)."""
    ops = [["dev", f"{dev}/{name}"] for name in sorted(os.listdir(dev))
           if name.startswith("nvidia")]
    if libraries is None:
        try:
            libraries = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                                       timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            libraries = ""
    dirs = {os.path.dirname(m) for m in re.findall(
        r"lib(?:cuda|nvidia-[\w.-]+|nvcuvid|nvoptix)\.so[\w.]*\s.*=>\s*(\S+)", libraries)}
    dirs |= {d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d}
    ops += [["ro", d, d] for d in sorted(dirs) if os.path.isdir(d)]
    if os.path.isdir("/sys"):
        ops.append(["ro", "/sys", "/sys"])
    return ops


def view(forbidden=(), device: str = "cpu") -> list[list]:
    """The sandbox's filesystem, as operations applied in order (by `_child` or by bwrap).

    ``["ro", source, target]`` binds read-only; ``["symlink", target, path]``; ``["tmpfs",
    path, bytes, files, mode]``; ``["dev", node]`` binds a device node; ``["select", dir,
    [[entry, "dir" | "file" | "link:target"], ...], [hidden entry, ...]]`` shows a package
    directory without the forbidden packages (code, metadata, ``.pth`` hooks); ``["proc"]``;
    ``["remount_ro", path]``.
    """
    ops, bound = [], []

    def bind(path: str, target: str | None = None) -> None:
        target = target or path
        if os.path.islink(path) and target == path:
            ops.append(["symlink", os.readlink(path), path])
        elif not _under(target, bound) and os.path.exists(path):
            ops.append(["ro", os.path.realpath(path), target])
            bound.append(target)

    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        bind(path)
    for path in ("/etc/ld.so.cache", "/etc/localtime", "/etc/fonts"):
        if os.path.exists(path):
            bind(os.path.realpath(path), path)
    for path in sorted(_python_paths(), key=len):
        bind(path)
    packages = {p for p in _python_paths() if os.path.isdir(p) and p.endswith("-packages")}
    for base in {"/usr", "/", *(str(Path(p).parent) for p in _python_paths())}:
        for pattern in ("lib/python3*/*-packages", "lib/python3/dist-packages",
                        "local/lib/python3*/*-packages", "lib64/python3*/site-packages"):
            packages.update(glob.glob(os.path.join(base, pattern)))
    for directory in sorted(p for p in packages if _under(p, bound) and os.path.isdir(p)):
        entries = sorted(os.listdir(directory))
        if any(_hidden(entry, forbidden) for entry in entries):
            kept = []
            for entry in (e for e in entries if not _hidden(e, forbidden)):
                path = os.path.join(directory, entry)
                kept.append([entry, "link:" + os.readlink(path) if os.path.islink(path) else
                             "dir" if os.path.isdir(path) else "file"])
            ops.append(["select", directory, kept,
                        [e for e in entries if _hidden(e, forbidden)]])
    ops += [["tmpfs", "/tmp", TMP_BYTES, 16384, 0o1777],
            ["tmpfs", "/dev", 65536, 64, 0o755]]
    ops += [["dev", f"/dev/{n}"] for n in ("null", "zero", "full", "random", "urandom")]
    ops += [["symlink", f"/proc/self/fd/{i}", f"/dev/{n}"]
            for i, n in enumerate(("stdin", "stdout", "stderr"))]
    ops += [["symlink", "/proc/self/fd", "/dev/fd"],
            ["tmpfs", "/dev/shm", SHM_BYTES, 1024, 0o1777]]
    if str(device).startswith("cuda"):
        ops += [op for op in cuda_binds() if not (op[0] == "ro" and _under(op[1], bound))]
    ops += [["remount_ro", "/dev"], ["proc"]]
    return ops


def bwrap_argv(ops: list[list], inner: list[str]) -> list[str]:
    """The ``bwrap`` command line that builds the same sandbox as `_child.isolate_namespaces`:
    the same namespaces and view; uid 0 inside with only CAP_SYS_RESOURCE and CAP_SETPCAP,
    which the sandbox's program uses to cap ipc and then drops with everything else."""
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-user", "--unshare-ipc",
            "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--disable-userns", "--die-with-parent", "--new-session", "--uid", "0", "--gid",
            "0", "--cap-drop", "ALL", "--cap-add", "CAP_SYS_RESOURCE", "--cap-add",
            "CAP_SETPCAP", "--hostname", "sandbox"]
    for kind, *args in ops:
        if kind == "ro":
            argv += ["--ro-bind", args[0], args[1]]
        elif kind == "dev":
            argv += ["--dev-bind", args[0], args[0]]
        elif kind == "symlink":
            argv += ["--symlink", args[0], args[1]]
        elif kind == "tmpfs":
            argv += ["--size", str(args[1]), "--perms", f"{args[3]:04o}", "--tmpfs", args[0]]
        elif kind == "select":  # (bwrap 0.8 makes no overlays: each kept entry is bound)
            argv += ["--perms", "0755", "--tmpfs", args[0]]
            for name, entry in args[1]:
                path = os.path.join(args[0], name)
                argv += (["--symlink", entry[5:], path] if entry.startswith("link:") else
                         ["--ro-bind", path, path])
            argv += ["--remount-ro", args[0]]
        elif kind == "proc":
            argv += ["--proc", "/proc"]
        elif kind == "remount_ro":
            argv += ["--remount-ro", args[0]]
    for name, path in _HARNESS.items():
        argv += ["--ro-bind", str(path), f"{_IN_BWRAP}/{name}.py"]
    return argv + ["--remount-ro", "/", "--chdir", "/tmp", *inner]


# ---------------------------------------------------------------------------------------------
# Choosing the path, and what the report says about it

_PROBED: dict[str, str] = {}


def unavailable(path: str) -> str:
    """Why isolation ``path`` does not work here ("" when it works); probed once, by running
    an empty job in it."""
    if path not in _PROBED:
        if not sys.platform.startswith("linux"):
            _PROBED[path] = "Linux namespaces exist only on Linux"
        elif path == "bubblewrap" and not shutil.which("bwrap"):
            _PROBED[path] = "bwrap is not installed"
        else:
            probe = run_job({"preamble": "", "cells": [], "function": "f", "calls": [],
                             "forbidden": []}, isolation=path, time_limit=60)
            _PROBED[path] = "" if probe.ended == "done" else (probe.setup_error or probe.reason)
    return _PROBED[path]


def choose(isolation: str = "auto", trust_submissions: bool = False) -> str:
    """Return the isolation path to grade with: the one asked for, or under ``"auto"`` the first
    that works of namespaces and bubblewrap; ``"none"`` only when neither works and
    ``trust_submissions``. Raises `IsolationUnavailable` otherwise."""
    if isolation == "none":
        if not trust_submissions:
            raise IsolationUnavailable("--isolation none needs --trust-submissions")
        return "none"
    wanted = PATHS if isolation == "auto" else (isolation,)
    if isolation not in ("auto", *PATHS):
        raise IsolationUnavailable(f"unknown isolation {isolation!r}; choose from auto, "
                                   "namespaces, bubblewrap, none")
    reasons = {path: unavailable(path) for path in wanted}
    for path in wanted:
        if not reasons[path]:
            return path
    if trust_submissions and isolation == "auto":
        return "none"
    lines = "\n".join(f"  - {path}: {reason}" for path, reason in reasons.items())
    raise IsolationUnavailable(
        "cannot isolate submissions on this machine, so they are not graded:\n" + lines + "\n"
        "Install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf "
        "install bubblewrap; Arch: sudo pacman -S bubblewrap), or allow unprivileged user "
        "namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or "
        "Ubuntu's kernel.apparmor_restrict_unprivileged_userns), or grade inside a Linux "
        "virtual machine. To grade without isolation, only submissions you trust, pass "
        "--trust-submissions: their code then runs with your permissions.")


def describe(path: str, memory_limit: int | None, time_limit: float | None,
             device: str = "cpu") -> dict[str, str]:
    """The report's ``sandbox`` field: the isolation the grader applied and its limits."""
    memory = (f"{memory_limit / 2**30:g} GiB per process (address space) and for all its "
              f"processes together" if memory_limit and device == "cpu" else
              f"{memory_limit / 2**30:g} GiB for all its processes together" if memory_limit
              else "no limit")
    if path == "none":
        return {"isolation": "none", "warning": "NOT ISOLATED (--trust-submissions): the "
                "submission's code ran with the teacher's permissions", "memory": memory,
                "files": "read: everything the teacher can; write: nothing (RLIMIT_FSIZE 0)"}
    return {"isolation": path,
            "files": "read-only Python installation without deepscope or peer libraries; "
                     f"private /tmp ({TMP_BYTES // 2**20} MiB); nothing else",
            "processes": f"own pid, ipc and uts namespaces; at most {TASKS} processes and "
                         "threads; none outlives its question; no privileges",
            "network": "none (own network namespace, no interface up)",
            "memory": memory,
            "environment": "allow-list: " + ", ".join(sorted(environment())),
            "time": "measured by the grader" + (f" ({time_limit:g} s per question)"
                                                 if time_limit else "")}


# ---------------------------------------------------------------------------------------------
# The zygote


class _Zygote:
    """A process that imported torch once and forks a fresh supervisor per question.

    Forking from it takes milliseconds where a new interpreter takes seconds to import torch.
    It starts on first use with the sandbox's environment (not the teacher's), is restarted if
    it died, and stops when the grader exits (it sees the socket close).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.process = None
        self.sock = None
        self.workdir = None

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if self.workdir is None:
            self.workdir = tempfile.TemporaryDirectory(prefix="deepscope-grading-")
            os.mkdir(os.path.join(self.workdir.name, "root"))
        boot = _ZYGOTE
        for index, path in enumerate(_HARNESS.values(), start=1):
            boot = boot.replace(f"sys.argv[{index}]", repr(str(path)))
        self.process = subprocess.Popen(
            [sys.executable, "-E", "-c", _READ_BOOT, *("-" * len(_HARNESS)), str(child.fileno())],
            pass_fds=(child.fileno(),), stdin=subprocess.PIPE, cwd=self.workdir.name,
            env=environment(), start_new_session=True)
        self.process.stdin.write(boot.encode())
        self.process.stdin.close()
        child.close()
        self.sock = parent

    @property
    def root(self) -> str:
        """The directory the sandboxes mount their root on (in their own mount namespaces)."""
        self.ensure_started()
        return os.path.join(self.workdir.name, "root")

    def ensure_started(self) -> None:
        """Start the zygote now (it imports torch while the grader prepares the checks)."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self._start()

    def fork(self, plan: dict, fds: list[int]) -> int:
        """Ask the zygote for a supervisor of the job; return its pid."""
        message = json.dumps({"plan": plan}).encode()
        with self.lock:
            for attempt in range(2):
                if self.process is None or self.process.poll() is not None:
                    self._start()
                try:
                    socket.send_fds(self.sock, [message], fds)
                    data = self.sock.recv(4)
                    if len(data) != 4:
                        raise ConnectionError("the zygote closed its socket")
                    return struct.unpack(">i", data)[0]
                except OSError:
                    self.close()
                    if attempt:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


_ZYGOTE_PROCESS = _Zygote()
atexit.register(_ZYGOTE_PROCESS.close)


def warm_up() -> None:
    """Start the process that forks the sandboxes, if it is not running yet."""
    _ZYGOTE_PROCESS.ensure_started()


# ---------------------------------------------------------------------------------------------
# Running one question


@dataclass
class ChildResult:
    """What came back from one sandboxed job, as the grader measured and checked it.

    ``calls[i]`` is ``("ok", value)``, ``("error", {"type", "message", "where"})`` or None when
    the child never reached call ``i``. ``ended`` is ``"done"`` when every call finished, else
    ``"timeout"``, ``"output"`` (printed too much), ``"result"`` (returned too much),
    ``"memory"``, ``"exited"`` (the process ended early), ``"malformed"`` (it wrote something
    that is not a result), or, the grader's side, ``"setup"`` (the sandbox could not be set up),
    ``"startup"`` (it did not start) or ``"cancelled"``.
    """

    calls: list
    ended: str = "done"
    reason: str = ""
    cell_errors: list = field(default_factory=list)
    output: str = ""
    seconds: float = 0.0
    exitcode: int | None = None
    setup_error: str = ""


_VIEWS: dict = {}


def plan_for(isolation: str, job: dict, device: str, limits: dict) -> dict:
    """The plan a supervisor carries out: the path, the view, the limits, the environment."""
    key = (tuple(job.get("forbidden", ())), str(device).split(":")[0])
    if key not in _VIEWS:
        _VIEWS[key] = view(*key)
    plan = {"mode": isolation, "ops": _VIEWS[key], "limits": limits, "env": environment(),
            "root": _ZYGOTE_PROCESS.root, "scratch": _ZYGOTE_PROCESS.root + "-scratch"}
    if isolation == "bubblewrap":
        inner = [sys.executable, "-E", "-c", _INSIDE_BWRAP,
                 *(f"{_IN_BWRAP}/{name}.py" for name in _HARNESS), "@JOB_FD@", "@RESULT_FD@",
                 json.dumps({"limits": limits})]
        plan["bwrap"] = bwrap_argv(plan["ops"], inner)
    return plan


def _device_available(name: str) -> bool:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    return device.type == "cpu"


def job_bytes(job: dict) -> bytes:
    """Serialize a job (cells, calls with tensors and modules) for the sandbox."""
    buffer = io.BytesIO()
    torch.save(job, buffer)
    return buffer.getvalue()


def _drain(fd: int, feed) -> None:
    """Feed what is already in a pipe, without waiting for more."""
    os.set_blocking(fd, False)
    try:
        while data := os.read(fd, 1 << 20):
            feed(data)
    except BlockingIOError:
        pass


def run_job(job: dict, *, isolation: str = "namespaces", time_limit: float = TIME_LIMIT,
            memory_limit: int | None = MEMORY_LIMIT, output_limit: int = OUTPUT_LIMIT,
            result_limit: int = RESULT_LIMIT, device: str = "cpu") -> ChildResult:
    """Run one job in a fresh sandbox under limits the grader keeps; return what came back.

    Args:
        job: ``{"preamble": str, "cells": [{"number", "source"}], "function": str,
            "calls": [(args, kwargs, positions)], "labels": [str], "forbidden": [module]}``.
        isolation: ``"namespaces"``, ``"bubblewrap"`` or ``"none"`` (see `choose`).
        time_limit: wall-clock seconds for the cells and every call, from "ready" on.
        memory_limit: bytes per process (address space, CPU only) and for the sandbox's
            processes together (None: unlimited).
        output_limit: bytes the submission may print (and send besides results).
        result_limit: bytes of everything on the result pipe.
        device: where tensors live (``"cuda"`` binds the GPU into the view).
    """
    limits = {"memory_bytes": memory_limit if str(device) == "cpu" else None,
              "tree_bytes": memory_limit, "cpu_seconds": int(time_limit) + 5,
              "tasks": TASKS if isolation != "none" else None, "tmp_bytes": TMP_BYTES,
              "sysv_bytes": SYSV_BYTES}
    plan = plan_for(isolation, job, device, limits)
    conversation = protocol.Conversation([c["number"] for c in job["cells"]], len(job["calls"]),
                                         output_limit, result_limit, _device_available)
    pipes = [os.pipe() for _ in range(5)]  # result, output, status, control, lifeline
    (res_r, res_w), (out_r, out_w), (status_r, status_w), (ctl_r, ctl_w), (life_r, life_w) = pipes
    with tempfile.TemporaryFile() as job_file:
        job_file.write(job_bytes(job))
        job_file.flush()
        job_file.seek(0)
        start = time.perf_counter()
        try:
            pid = _ZYGOTE_PROCESS.fork(plan, [job_file.fileno(), res_w, out_w, status_w, ctl_w,
                                              life_r])
        finally:
            for fd in (res_w, out_w, status_w, ctl_w, life_r):
                os.close(fd)
    feeds = {res_r: conversation.feed_result, out_r: conversation.feed_output}
    control = [ctl_r]
    deadline, ready_at, ended, detail, exitcode, used = start + STARTUP_GRACE, None, None, "", \
        None, 0
    try:
        while ended is None:
            if conversation.ready and ready_at is None:
                ready_at = time.perf_counter()
                deadline = ready_at + time_limit
            now = time.perf_counter()
            if conversation.done:
                ended = "done" if conversation.ready else "setup"
            elif now >= deadline:
                ended = "timeout" if ready_at else "startup"
            elif CANCEL.is_set():
                ended = "cancelled"
            if ended:
                break
            watched = [*feeds] + ([status_r] if exitcode is None else []) + control
            ready, _, _ = select.select(watched, [], [], min(deadline - now, 0.25))
            event = os.read(ctl_r, 4096) if ctl_r in ready else b""
            if ctl_r in ready and not event:
                control = []  # the supervisor has ended
            if event:  # the supervisor stopped the sandbox for its memory
                used, ended = int(json.loads(event.splitlines()[0]).get("memory", 0)), "memory"
            elif status_r in ready:
                data = os.read(status_r, 4)
                exitcode = struct.unpack(">i", data)[0] if len(data) == 4 else -1
                for fd, feed in feeds.items():  # what it wrote before it ended
                    _drain(fd, feed)
                ended = "done" if conversation.done and conversation.ready else (
                    "setup" if conversation.setup_error else "exited")
            for fd in [fd for fd in ready if fd in feeds]:
                data = os.read(fd, 1 << 20)
                if data:
                    feeds[fd](data)
                else:
                    del feeds[fd]
    except protocol.LimitExceeded as err:
        ended = err.kind
    except protocol.ProtocolError as err:
        ended, detail = "malformed", str(err)
    finally:
        seconds = time.perf_counter() - ready_at if ready_at else 0.0
        os.close(life_w)  # the supervisor kills the sandbox now, if it still runs
        if ended not in ("done", "exited", "setup"):  # it was stopped: make sure it is gone
            _await_supervisor(pid, status_r, exitcode)
        for fd in (res_r, out_r, status_r, ctl_r):
            os.close(fd)
    result = ChildResult(calls=conversation.calls, ended=ended, exitcode=exitcode,
                         cell_errors=conversation.cell_errors,
                         setup_error=conversation.setup_error,
                         output=protocol.clean_text(bytes(conversation.output).decode(
                             "utf-8", "replace"), limit=2000), seconds=seconds)
    result.reason = _reason(result, conversation, job, time_limit, memory_limit, output_limit,
                            result_limit, used, detail)
    return result


def _await_supervisor(pid: int, status_r: int, exitcode) -> None:
    """Give the supervisor a moment to kill the sandbox and end; then kill it."""
    if exitcode is None and not select.select([status_r], [], [], 2.0)[0]:
        for target in (lambda: os.killpg(pid, signal.SIGKILL),
                       lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass


def _reason(result: ChildResult, conversation, job, time_limit, memory_limit, output_limit,
            result_limit, used, detail) -> str:
    where = _where(conversation.stage, job)
    return {
        "done": "",
        "timeout": f"timed out after {time_limit:g} s{where}",
        "output": f"printed more than {output_limit // 1024} KiB{where}; the grader stopped it",
        "result": f"returned more than {result_limit // 2**20} MiB of data{where}",
        "memory": f"its processes together used {used / 2**30:.1f} GiB, more than the "
                  f"{(memory_limit or 0) / 2**30:g} GiB allowed{where}; the grader stopped it",
        "exited": f"the process ended early ({_exit_text(result.exitcode)}){where}",
        "malformed": f"wrote something that is not a result to the grader's pipe{where}"
                     + (f" ({detail})" if detail else ""),
        "setup": f"the sandbox could not be set up: {conversation.setup_error or 'no reason'}",
        "startup": f"the sandbox did not start within {STARTUP_GRACE:g} s",
        "cancelled": "grading was interrupted",
    }[result.ended]


def _exit_text(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {"SIGXCPU": ": CPU time limit", "SIGSEGV": ": a crash in native code"}.get(name, "")
    return f"killed by {name}{why}"


def _where(stage: tuple, job: dict) -> str:
    kind, where = stage
    if kind == "cell":
        return f" while running answer cell {where} at its top level"
    if kind == "call":
        labels = job.get("labels") or []
        label = labels[where] if 0 <= where < len(labels) else f"call {where + 1}"
        return f" while calling {job['function']} ({label})"
    return " before running any answer cell"
