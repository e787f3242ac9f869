"""The sandboxed side of grading: runs ONE question of a submission and reports its outputs.

The grader (the parent) starts one child process per question (`deepscope.grading.sandbox`). The
child lowers its own limits, executes the student's answer cells, calls the student's function on
the inputs the parent sent and streams back plain data: each call's outputs as tensors in a
safetensors blob with a JSON header, or the error it raised. Nothing is judged here: the parent
compares the outputs with references it computed itself, so whatever the submission does inside
this process (patching torch or deepscope, exiting, printing, hanging) cannot change a verdict.

Wire format on the result pipe (written with ``os.write``, read without blocking by the parent):
frames of ``4-byte big-endian length + payload``; a payload is one kind byte and a body:

- ``P`` progress, JSON ``{"stage": "cell"|"call", ...}``: where the child is (for timeout messages)
- ``S`` sandbox, JSON: which isolation applied (network namespace or Python-level block, limits)
- ``E`` cell error, JSON: a top-level error of an answer cell (the question may still pass)
- ``C`` call result: 8-byte JSON length, JSON ``{"index", "ok" | "error"}``, then safetensors
- ``D`` done
"""

from __future__ import annotations

import builtins
import ctypes
import importlib.abc
import io
import json
import linecache
import os
import resource
import signal
import struct
import sys
import traceback

import numpy as np
import torch
from safetensors.torch import save as _safetensors_save

from . import rules as _rules

#: Linux clone flags for unshare(2): a new user namespace lets an unprivileged process own new
#: mount, network and pid namespaces (see `_namespaces`).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MAX_DEPTH = 6
_MAX_TENSORS = 512
_MAX_MESSAGE = 4000


class _Channel:
    """Frames written straight to a file descriptor (no pickling, no buffering)."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, kind: bytes, body: bytes) -> None:
        payload = kind + body
        data = struct.pack(">I", len(payload)) + payload
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def send_json(self, kind: bytes, obj) -> None:
        self.send(kind, json.dumps(obj, allow_nan=True).encode())


# ---------------------------------------------------------------------------------------------
# Isolation


class _ImportBlocker(importlib.abc.MetaPathFinder):
    """Refuse imports of the reference library and of peer libraries inside a submission."""

    def __init__(self, forbidden: tuple[str, ...]):
        self.forbidden = forbidden

    def find_spec(self, fullname, path=None, target=None):
        for name in self.forbidden:
            if fullname == name or fullname.startswith(name + "."):
                raise ImportError(
                    f"importing {fullname!r} is not allowed in an answer: the grader compares "
                    "your code with the library's reference, so implement it yourself "
                    "(torch, numpy, scipy, math and the standard library are fine)"
                )
        return None


def block_imports(forbidden: tuple[str, ...]) -> None:
    """Remove already imported forbidden modules and refuse any further import of them."""
    for name in sorted(sys.modules, reverse=True):
        if any(name == f or name.startswith(f + ".") for f in forbidden):
            del sys.modules[name]  # running code keeps its own references; imports now fail
            parent, _, attr = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], attr, None) is not None:
                delattr(sys.modules[parent], attr)
    sys.meta_path.insert(0, _ImportBlocker(tuple(forbidden)))


def _block_sockets() -> None:  # pragma: no cover - runs only where namespaces are unavailable
    import socket

    def refuse(*_args, **_kwargs):
        raise OSError("network access is disabled while grading")

    socket.socket = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    try:
        import _socket

        _socket.socket = refuse
    except ImportError:
        pass


_MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024,
             "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
_MS_REMOUNT, _MS_BIND = 32, 4096


def _write_proc(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _mounts() -> list[tuple[str, int]]:
    """Mount points of this namespace with their per-mount flags, parents first."""
    mounts = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = sum(_MS_FLAGS.get(opt, 0) for opt in fields[5].split(","))
            mounts.append((point, flags))
    return mounts


def _namespaces() -> dict:  # pragma: no cover - runs in the child process only
    """Enter new user, mount, network and pid namespaces; make every mount read-only.

    Unprivileged: a new user namespace grants the capabilities needed inside it only. The
    network namespace is empty (a down loopback), the pid namespace hides every process outside
    (the grader cannot be signalled), and after the remounts a second user+mount namespace
    locks the read-only flags so the submission cannot undo them. Returns what applied, or
    an empty dict when the kernel refuses (e.g. inside a container that forbids namespaces).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID) != 0:
        return {}
    applied = {"network": "none (empty network namespace)",
               "processes": "own pid namespace (nothing outside is visible)"}
    try:
        _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", f"0 {uid} 1")
        _write_proc("/proc/self/gid_map", f"0 {gid} 1")
        failed = []
        mount = libc.mount
        mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                          ctypes.c_void_p]
        for point, flags in _mounts():
            if mount(None, point.encode(), None, _MS_REMOUNT | _MS_BIND | 1 | flags, None):
                failed.append(point)
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            failed.append("(lock)")
        applied["filesystem"] = ("read-only" if not failed else
                                 "read-only except " + ", ".join(failed[:5]))
    except OSError as err:
        applied["filesystem"] = f"writable ({err.strerror})"
    return applied


def isolate(limits: dict) -> dict:  # pragma: no cover - runs in the child process only
    """Lower this process's limits and cut it off; return what applied (for the report).

    Namespaces first (they need the /proc writes that the file-size limit would refuse), then
    rlimits. Without namespaces, a Python-level socket block stands in for the network one and
    RLIMIT_FSIZE = 0 still keeps any file from receiving data.
    """
    os.setsid()  # own process group: the parent kills everything the submission starts
    applied: dict = {}
    if limits.get("namespaces", True) and sys.platform.startswith("linux"):
        try:
            applied = _namespaces()
        except (OSError, AttributeError):
            applied = {}
    if "network" not in applied:
        _block_sockets()
        applied.update(network="Python-level socket block", processes="own process group",
                       filesystem="no file receives data (RLIMIT_FSIZE = 0)")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write raises OSError, not a kill
    for name, value in (
        ("RLIMIT_CORE", 0),
        ("RLIMIT_FSIZE", 0),  # no file can receive data (pipes are not files)
        ("RLIMIT_CPU", limits.get("cpu_seconds")),
        ("RLIMIT_AS", limits.get("memory_bytes")),
    ):
        which = getattr(resource, name, None)
        if which is None or value is None:
            continue
        try:
            resource.setrlimit(which, (int(value), int(value)))
            applied[name] = int(value)
        except (ValueError, OSError):
            applied[name] = "unavailable"
    torch.set_num_threads(1)
    return applied


# ---------------------------------------------------------------------------------------------
# Running the student's code


def _where(err: BaseException) -> str:
    """The innermost frame of the student's code in a traceback, as 'cell N, line L: source'."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith("<cell")]
    if not frames:
        return ""
    frame = frames[-1]
    cell = frame.filename.strip("<>")
    line = (frame.line or "").strip()
    return f"{cell}, line {frame.lineno}" + (f": {line}" if line else "")


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
    return {"type": type(err).__name__, "message": message[:_MAX_MESSAGE], "where": _where(err)}


def execute_cells(cells: list[dict], namespace: dict, channel: _Channel | None = None) -> list:
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
            channel.send_json(b"P", {"stage": "cell", "cell": cell["number"]})
        try:
            exec(compile(cell["source"], filename, "exec"), namespace)  # noqa: S102
        except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            errors.append({"cell": cell["number"], **describe_error(err)})
    return errors


def encode(value, tensors: dict, depth: int = 0):
    """Turn a returned value into JSON-able structure; tensors go into ``tensors`` (on the CPU).

    Tensors keep their dtype; their device is recorded so the parent can check device
    preservation. NumPy arrays become tensors (marked as such); anything else is named, not sent.
    """
    if depth > _MAX_DEPTH:
        raise ValueError("the returned value is nested too deeply")
    if isinstance(value, torch.Tensor):
        if len(tensors) >= _MAX_TENSORS:
            raise ValueError(f"the returned value holds more than {_MAX_TENSORS} tensors")
        key = str(len(tensors))
        tensor = torch.Tensor.detach(value)
        device = str(tensor.device)
        if tensor.is_sparse or tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensors[key] = tensor.to("cpu").contiguous().clone()
        return {"tensor": key, "device": device}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError("the returned NumPy array has dtype object")
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        return {"tensor": key, "device": "numpy"}
    if value is None or isinstance(value, (bool, str)):
        return {"value": value if not isinstance(value, str) else value[:_MAX_MESSAGE]}
    if isinstance(value, (int, np.integer)):
        return {"value": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"value": float(value)}
    if isinstance(value, (tuple, list)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [encode(v, tensors, depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("a returned dict must have string keys")
        return {"dict": {k: encode(v, tensors, depth + 1) for k, v in value.items()}}
    return {"unsupported": type(value).__name__}


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

    ``call`` is ``(args, kwargs)``, ``(args, kwargs, positions)`` or ``(args, kwargs, positions,
    observe)``: with positions, the result comes back as ``(value, gradients with respect to
    those positional arguments)``; with ``observe``, as ``(result, rules.changes(...))``.
    """
    args, kwargs, *rest = call
    positions = rest[0] if rest else ()
    observe = len(rest) > 1 and bool(rest[1])  # also report what the call changed (rules.py)
    try:
        before = _rules.snapshot(fn, args, kwargs) if observe else None
        value = _differentiated(fn, args, kwargs, positions) if positions else fn(*args,
                                                                                  **kwargs)
        if observe:
            value = (value, _rules.changes(before))
        tensors: dict = {}
        header = {"index": index, "ok": encode(value, tensors)}
        blob = _safetensors_save(tensors) if tensors else b""
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
        header = {"index": index, "error": describe_error(err)}
        blob = b""
    head = json.dumps(header, allow_nan=True).encode()
    return struct.pack(">Q", len(head)) + head + blob


def run(job: dict, channel: _Channel) -> None:
    """Execute the preamble and the answer cells, then every call of the graded function."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(job["preamble"], "<preamble>", "exec"), namespace)  # noqa: S102
    for error in execute_cells(job["cells"], namespace, channel):
        channel.send_json(b"E", error)
    for source in job.get("substitutes", ()):  # correct versions of other graded functions
        exec(compile(source, "<reference>", "exec"), namespace)  # noqa: S102
    fn = namespace.get(job["function"])
    if not callable(fn):
        missing = {"type": "NameError", "where": "",
                   "message": f"no function named {job['function']!r} is defined by the cells"}
        for index in range(len(job["calls"])):
            head = json.dumps({"index": index, "error": missing}).encode()
            channel.send(b"C", struct.pack(">Q", len(head)) + head)
        return
    for index, call in enumerate(job["calls"]):
        channel.send_json(b"P", {"stage": "call", "call": index})
        channel.send(b"C", call_result(index, fn, call))


def _become_pid_one(result_fd: int) -> None:  # pragma: no cover - runs in the child only
    """Fork once so the rest runs as pid 1 of the new pid namespace; the first process only
    waits and passes the exit status on (when pid 1 ends, the kernel kills the whole namespace,
    so nothing a submission started outlives it)."""
    pid = os.fork()
    if pid == 0:
        return
    for fd in (0, 1, 2, result_fd):
        try:
            os.close(fd)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # die of the same signal, so the grader can name it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def main(job_fd: int, result_fd: int, output_fd: int, limits: dict) -> None:  # pragma: no cover
    """Run one job in this (forked) process: read it, isolate, run it, report; never return."""
    channel = _Channel(result_fd)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    code = 0
    try:
        with os.fdopen(job_fd, "rb") as file:
            job_bytes = file.read()
        sandbox = isolate(limits)
        if sandbox.get("processes", "").startswith("own pid"):
            _become_pid_one(result_fd)
        channel.send_json(b"S", sandbox)
        job = torch.load(io.BytesIO(job_bytes), weights_only=False)  # from the parent: trusted
        block_imports(tuple(job["forbidden"]))
        run(job, channel)
        channel.send(b"D", b"")
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


# ---------------------------------------------------------------------------------------------
# The zygote: a process that imported torch once and forks one child per question


def serve(sock_fd: int) -> None:  # pragma: no cover - runs in the zygote process
    """Fork a child per request received on the Unix socket ``sock_fd``; report exit statuses.

    A request is a JSON message ``{"limits": {...}}`` with four file descriptors attached: the job
    (readable), the result pipe, the output pipe and a status pipe. The zygote answers with the
    child's pid and, when it reaps the child, writes its exit status (4 bytes, signed; negative
    for a signal) to the status pipe and closes it: the parent uses the status pipe as the
    child's sentinel. The zygote exits when the parent closes the socket.
    """
    import select
    import socket
    import tempfile

    # torch.func's vmap imports torch._dynamo, which asks tempfile for a directory (tempfile
    # probes by writing a file) and creates its cache directory: both writes the sandbox
    # refuses. Resolve the temp dir and create the cache here, once (in the zygote's own dir).
    tempfile.gettempdir()
    cache = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath("torch-cache"))
    os.makedirs(os.path.join(cache, "dynamo"), exist_ok=True)
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
                code = os.waitstatus_to_exitcode(status)
                try:
                    os.write(fd, struct.pack(">i", code))
                except OSError:
                    pass
                os.close(fd)
        if not readable:
            continue
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, 65536, 4)
        except OSError:
            message, fds = b"", []
        if not message:
            return
        request = json.loads(message)
        job_fd, result_fd, output_fd, status_fd = fds
        pid = os.fork()
        if pid == 0:
            sock.close()
            for fd in (status_fd, *status_fds.values()):
                os.close(fd)
            main(job_fd, result_fd, output_fd, request["limits"])
        for fd in (job_fd, result_fd, output_fd):
            os.close(fd)
        status_fds[pid] = status_fd
        sock.sendall(struct.pack(">i", pid))
