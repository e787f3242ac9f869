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

The isolation steps themselves are in `_isolate`. This module runs where ``deepscope`` cannot
be imported (it is absent from the sandbox's view): the zygote and the bubblewrap sandbox load
it, `_isolate` and `protocol` by file path.
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import os
import resource
import select
import signal
import struct
import sys
import traceback

import torch

try:
    from . import _isolate, protocol
    from . import rules as _rules
except ImportError:  # loaded by file path (the zygote, the bubblewrap sandbox): no package
    import _sandbox_isolate as _isolate  # type: ignore[no-redef]
    import _sandbox_protocol as protocol  # type: ignore[no-redef]
    import _sandbox_rules as _rules  # type: ignore[no-redef]

MAX_MESSAGE = protocol.MAX_MESSAGE
SETUP_FAILED = 121  # exit code of a sandbox that could not be set up


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
        _isolate.die_with_parent()
        _redirect_output(output_fd)
        _isolate.close_fds({0, 1, 2, job_fd, result_fd})
        if plan["mode"] == "bubblewrap":
            _exec_bwrap(plan, root_user, job_fd, result_fd)
        if plan["mode"] == "namespaces":
            _isolate.isolate_namespaces(plan, root_user)
        else:
            os.setpgid(0, 0)  # trusted mode: the supervisor kills the whole group
        _isolate.set_limits(plan["limits"], write_files=plan["mode"] != "none")
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
        os.setgid(_isolate.NOBODY)
        os.setuid(_isolate.NOBODY)
    os.execve(argv[0], argv, plan["env"])


def bubblewrap_main(job_fd: int, result_fd: int, plan: dict) -> None:  # pragma: no cover
    """The sandbox's program inside ``bwrap`` (which made the namespaces and the view): cap
    ipc, drop the two capabilities bwrap kept for that, lower the limits, run the job."""
    channel = protocol.Channel(result_fd)
    try:
        # bwrap passes on every descriptor it inherited, the O_PATH ones it bound from
        # included: through those the host's directories would be reachable.
        _isolate.close_fds({0, 1, 2, job_fd, result_fd})
        _isolate.ipc_limits(plan["limits"])
        _isolate.drop_privileges()
        _isolate.set_limits(plan["limits"])
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
            _isolate.enter_outer_namespaces(root_user)
        pid = os.fork()
    except (_isolate.SetupError, OSError) as err:
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
    wake_r, wake_w = os.pipe()  # a supervisor's end wakes the loop at once
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sock = socket.socket(fileno=sock_fd)
    status_fds: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([sock, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 4096)
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
        if sock not in readable:
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
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            for fd in (status_fd, wake_r, wake_w, *status_fds.values()):
                os.close(fd)
            supervise(request, [job_fd, result_fd, output_fd, control_fd, lifeline_fd])
        for fd in (job_fd, result_fd, output_fd, control_fd, lifeline_fd):
            os.close(fd)
        status_fds[pid] = status_fd
        sock.sendall(struct.pack(">i", pid))
