"""Run one question of a submission in a separate, limited process and collect its outputs.

The child (`deepscope.grading._child`) is forked from a *zygote* process that has imported torch
once, so a question starts in tens of milliseconds instead of seconds, while every
question still gets a fresh process of its own: nothing one question does reaches another one or
the grader. The parent enforces a wall-clock limit and caps on printed output and returned data;
it reads both pipes without ever blocking, so a child that stalls mid-message cannot stall it.
Before exec'ing anything the child lowers its own limits (`_child.isolate`): its own process
group (killed as a whole at the end), no file writes (RLIMIT_FSIZE = 0), an address-space limit
on CPU runs, a CPU-time backstop, and an empty network namespace (a Python-level socket block
where unprivileged namespaces are unavailable).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _child

#: Defaults of `run_job` (the CLI and `grade` expose them).
TIME_LIMIT = 60.0
MEMORY_LIMIT = 4 * 2**30
OUTPUT_LIMIT = 2**20
RESULT_LIMIT = 256 * 2**20
STARTUP_GRACE = 120.0
_TAIL = 2000


@dataclass
class ChildResult:
    """What came back from one child: per-call outputs or errors, and how the child ended.

    ``calls[i]`` is ``("ok", value)``, ``("error", {"type", "message", "where"})`` or None when
    the child never reached call ``i``. ``ended`` is ``"done"`` when every call finished, else
    ``"timeout"``, ``"output"`` (printed too much), ``"result"`` (returned too much), ``"exited"``
    (the process ended early) or ``"malformed"`` (it wrote something that is not a result).
    """

    calls: list
    ended: str = "done"
    reason: str = ""
    cell_errors: list = field(default_factory=list)
    sandbox: dict = field(default_factory=dict)
    output: str = ""
    seconds: float = 0.0
    exitcode: int | None = None


class _Unsupported:
    """A returned value of a type the grader does not transport (its type name is kept)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}>"


def _decode(node, tensors: dict, device_ok, depth: int = 0):
    if not isinstance(node, dict) or len(node) == 0 or depth > 8:
        raise ValueError("malformed value")
    if "tensor" in node:
        tensor = tensors[str(node["tensor"])]
        device = node.get("device", "cpu")
        if device == "numpy":
            return tensor.numpy()
        if device != "cpu" and device_ok(device):
            tensor = tensor.to(device)
        return tensor
    if "value" in node:
        value = node["value"]
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ValueError("malformed scalar")
        return value
    for kind, build in (("tuple", tuple), ("list", list)):
        if kind in node:
            return build(_decode(v, tensors, device_ok, depth + 1) for v in node[kind])
    if "dict" in node:
        return {str(k): _decode(v, tensors, device_ok, depth + 1) for k, v in node["dict"].items()}
    if "unsupported" in node:
        return _Unsupported(str(node["unsupported"])[:100])
    raise ValueError("malformed value")


def _device_available(name: str) -> bool:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    return device.type == "cpu"


def decode_call(body: bytes):
    """Decode a ``C`` frame body into ``(index, ("ok", value) | ("error", info))``."""
    from safetensors.torch import load as safetensors_load

    (head_len,) = struct.unpack(">Q", body[:8])
    header = json.loads(body[8:8 + head_len])
    index = int(header["index"])
    if "error" in header:
        info = header["error"]
        clean = {k: str(info.get(k, ""))[:_child._MAX_MESSAGE]
                 for k in ("type", "message", "where")}
        return index, ("error", clean)
    blob = body[8 + head_len:]
    tensors = safetensors_load(blob) if blob else {}
    return index, ("ok", _decode(header["ok"], tensors, _device_available))


class _Frames:
    """Accumulate bytes from a pipe and cut them into length-prefixed frames."""

    def __init__(self):
        self.buffer = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        self.total += len(data)
        frames = []
        while len(self.buffer) >= 4:
            (length,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) < 4 + length:
                break
            frames.append(bytes(self.buffer[4:4 + length]))
            del self.buffer[:4 + length]
        return frames


class _Zygote:
    """A process that imported torch once and forks a fresh child per question (`_child.serve`).

    Forking from it takes milliseconds where a new interpreter takes seconds to import torch.
    It is started on first use, restarted if it died (a submission may kill its parent), and
    stops when the grader exits (it sees the socket close).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.process = None
        self.sock = None
        self.workdir = None

    def _start(self) -> None:
        import subprocess

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(p for p in (package_root,
                                                          os.environ.get("PYTHONPATH")) if p))
        self.workdir = tempfile.TemporaryDirectory(prefix="deepscope-grading-")
        code = "import sys; from deepscope.grading._child import serve; serve(int(sys.argv[1]))"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(child.fileno())], pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL, cwd=self.workdir.name, env=env)
        child.close()
        self.sock = parent

    def ensure_started(self) -> None:
        """Start the zygote now (it imports torch while the grader prepares the checks)."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self._start()

    def fork(self, job_fd: int, fds: tuple[int, int, int], limits: dict) -> int:
        """Ask the zygote for a child running the job; return its pid."""
        with self.lock:
            for attempt in range(2):
                if self.process is None or self.process.poll() is not None:
                    self._start()
                try:
                    socket.send_fds(self.sock, [json.dumps({"limits": limits}).encode()],
                                    [job_fd, *fds])
                    data = b""
                    while len(data) < 4:
                        chunk = self.sock.recv(4 - len(data))
                        if not chunk:
                            raise ConnectionError("the zygote closed its socket")
                        data += chunk
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


_ZYGOTE = _Zygote()
atexit.register(_ZYGOTE.close)


def warm_up() -> None:
    """Start the process that forks the sandboxes, if it is not running yet."""
    _ZYGOTE.ensure_started()


def _kill(pid: int | None) -> None:
    """Kill the child's whole process group (what the submission started too), then the child."""
    if not pid:
        return
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def job_bytes(job: dict) -> bytes:
    """Serialize a job (cells, calls with tensors and modules) for the child."""
    buffer = io.BytesIO()
    torch.save(job, buffer)
    return buffer.getvalue()


def run_job(
    job: dict,
    *,
    time_limit: float = TIME_LIMIT,
    memory_limit: int | None = MEMORY_LIMIT,
    output_limit: int = OUTPUT_LIMIT,
    result_limit: int = RESULT_LIMIT,
    namespaces: bool = True,
) -> ChildResult:
    """Run one job in a fresh child process under limits; return what came back.

    Args:
        job: ``{"preamble": str, "cells": [{"number", "source"}], "function": str,
            "calls": [(args, kwargs)], "forbidden": [module names]}``.
        time_limit: wall-clock seconds for the whole job (cells and every call).
        memory_limit: address-space bytes of the child (None: unlimited; use None on CUDA, whose
            driver reserves far more address space than it uses).
        output_limit: bytes the submission may print before it is stopped.
        result_limit: bytes of returned data before the child is stopped.
        namespaces: try an empty network namespace (else only a Python-level socket block).
    """
    result = ChildResult(calls=[None] * len(job["calls"]))
    limits = {"memory_bytes": memory_limit, "namespaces": namespaces,
              "cpu_seconds": int(time_limit) + 5}
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    with tempfile.TemporaryFile() as job_file:
        job_file.write(job_bytes(job))
        job_file.flush()
        job_file.seek(0)
        start = time.perf_counter()
        try:
            pid = _ZYGOTE.fork(job_file.fileno(), (res_w, out_w, status_w), limits)
        finally:
            for fd in (res_w, out_w, status_w):
                os.close(fd)
    frames, output = _Frames(), bytearray()
    progress: dict = {}
    open_fds = {res_r: "result", out_r: "output"}
    ended = None
    started_at = None
    exitcode = None

    def handle(frame: bytes) -> None:
        nonlocal ended, started_at
        kind, body = frame[:1], frame[1:]
        if kind == b"C":
            index, value = decode_call(body)
            if not 0 <= index < len(result.calls):
                raise ValueError("call index out of range")
            result.calls[index] = value
        elif kind == b"P":
            progress.clear()
            progress.update({k: v for k, v in json.loads(body).items()
                             if k in ("stage", "cell", "call")})
        elif kind == b"E":
            info = json.loads(body)
            result.cell_errors.append({k: str(info.get(k, ""))[:_child._MAX_MESSAGE]
                                       for k in ("cell", "type", "message", "where")})
        elif kind == b"S":
            started_at = time.perf_counter()
            result.sandbox = {str(k): str(v)[:100] for k, v in json.loads(body).items()}
        elif kind == b"D":
            ended = "done"
        else:
            raise ValueError(f"unknown frame kind {kind!r}")

    try:
        while ended is None:
            # The clock starts when the child reports in (its first frame); a child that never
            # does gets STARTUP_GRACE more seconds.
            began = started_at if started_at is not None else start + STARTUP_GRACE
            remaining = time_limit - (time.perf_counter() - began)
            if remaining <= 0:
                ended = "timeout"
                break
            watched = [*open_fds, status_r] if exitcode is None else list(open_fds)
            if not watched:
                ended = "exited"
                break
            ready, _, _ = select.select(watched, [], [], remaining)
            if status_r in ready:
                data = os.read(status_r, 4)
                exitcode = struct.unpack(">i", data)[0] if len(data) == 4 else -1
                # The child is gone: read what it left in the pipes, but do not wait for
                # processes it may have started that still hold them open.
                open_fds = {fd: kind for fd, kind in open_fds.items()
                            if select.select([fd], [], [], 0)[0]}
                continue
            for fd in [r for r in ready if r in open_fds]:
                data = os.read(fd, 1 << 20)
                if not data:
                    del open_fds[fd]
                elif open_fds[fd] == "output":
                    output += data
                    if len(output) > output_limit:
                        ended = "output"
                else:
                    if frames.total + len(data) > result_limit:
                        ended = "result"
                        break
                    try:
                        for frame in frames.feed(data):
                            handle(frame)
                    except Exception:  # noqa: BLE001 - whatever the child wrote, stay in control
                        ended = "malformed"
                        break
    finally:
        _kill(pid)
        for fd in (res_r, out_r, status_r):
            os.close(fd)
    result.seconds = time.perf_counter() - (started_at or start)
    result.exitcode = exitcode
    result.output = bytes(output[-_TAIL:]).decode("utf-8", "replace")
    result.ended = ended
    where = _describe_progress(progress, job)
    result.reason = {
        "done": "",
        "timeout": f"timed out after {time_limit:g} s{where}",
        "output": f"printed more than {output_limit // 1024} KiB{where}; the grader stopped it",
        "result": f"returned more than {result_limit // 2**20} MiB of data{where}",
        "exited": f"the process ended early ({_exit_text(exitcode)}){where}",
        "malformed": f"wrote something that is not a result to the grader's pipe{where}",
    }[ended]
    return result


def _exit_text(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {"SIGXCPU": ": CPU time limit", "SIGSEGV": ": a crash in native code"}.get(name, "")
    return f"killed by {name}{why}"


def _describe_progress(progress: dict, job: dict) -> str:
    if progress.get("stage") == "cell":
        return f" while running answer cell {progress.get('cell')} at its top level"
    if progress.get("stage") == "call":
        index = int(progress.get("call", 0))
        labels = job.get("labels") or []
        label = labels[index] if 0 <= index < len(labels) else f"call {index + 1}"
        return f" while calling {job['function']} ({label})"
    return " before running any answer cell"
