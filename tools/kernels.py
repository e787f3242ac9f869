"""Jupyter kernels that start race-free in parallel and never outlive the run that started them.

Why: with TCP, jupyter_client picks five free ports, releases them and lets the kernel bind them
later. Two kernels started at the same moment by parallel workers can be handed the same ports;
their clients then talk to the wrong kernel and wait forever for replies that never come (the
headless book hung in 2 of 4 two-worker runs that way). Here, where the platform has Unix
sockets, every kernel listens on IPC sockets in a private temporary folder of its own, so there is
no shared namespace to race on. Elsewhere (Windows) kernel starts are serialised under a lock
file shared by all workers, held until the kernel is ready, so no two ports are picked at once.

Nothing outlives the run. A kernel is a session leader (jupyter_client starts it with
``start_new_session``): shutting it down kills its whole session, with anything a notebook
started. `kill_kernels` is the runner's last word on exit (Ctrl-C, SIGTERM and SIGHUP unwind
into it); for a runner killed outright (SIGKILL), a watchdog process that learns each kernel's pid
through a pipe kills their sessions when the pipe closes, and ipykernel exits by itself when its
parent is gone.

    from tools.kernels import PrivateKernelManager
    NotebookClient(nb, kernel_manager_class=PrivateKernelManager, ...)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_core.utils import ensure_async, run_sync
from traitlets import Type

#: The kernels this process started and has not shut down yet: pid -> private folder (or None).
_LIVE: dict[int, str | None] = {}

# The watchdog: a small process in a session of its own that learns every kernel's pid from us
# through a pipe. When the pipe closes (this process exited, however: even SIGKILL), it kills the
# sessions of the kernels we had not shut down, with whatever they started.
WATCHDOG = """
import os, shutil, signal, sys
live = {}
for line in sys.stdin:
    pid, _, folder = line.rstrip("\\n").partition(" ")
    if int(pid) > 0:
        live[int(pid)] = folder
    else:
        live.pop(-int(pid), None)
for pid, folder in live.items():
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
"""
_watchdog = None
_lock = threading.Lock()  # runners execute notebooks in threads


def _tell_watchdog(pid: int, folder: str | None = None) -> None:
    """Register (pid > 0, with the kernel's private folder) or unregister (pid < 0) a kernel
    session with the watchdog."""
    if os.name != "posix":  # pragma: no cover
        return
    with _lock:
        _tell_watchdog_locked(pid, folder or "")


def _tell_watchdog_locked(pid: int, folder: str) -> None:
    global _watchdog
    if _watchdog is None or _watchdog.poll() is not None:
        _watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG], stdin=subprocess.PIPE,
                                     text=True, start_new_session=True)
    with contextlib.suppress(OSError):
        _watchdog.stdin.write(f"{pid} {folder}\n")
        _watchdog.stdin.flush()


def ipc_supported() -> bool:
    """True where ZeroMQ's ``ipc://`` transport (Unix domain sockets) is available."""
    return os.name == "posix"


@contextlib.contextmanager
def _start_lock():
    """A lock shared by every process of this user: held while a TCP kernel picks its ports."""
    path = Path(tempfile.gettempdir()) / "deepscope-kernel-start.lock"
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    time.sleep(0.05)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


#: Longest single wait on a kernel socket, in seconds (see `SlicedPollClient`).
POLL_SLICE = 1.0


class _SlicedChannel(AsyncZMQSocketChannel):
    """A channel whose waits are cut into `POLL_SLICE` polls.

    pyzmq's asyncio sockets wake on an edge-triggered file descriptor; now and then (3 cells in
    600 of a widget-heavy stress notebook, measured) the wake-up for a message that did arrive is
    missed, and the client sleeps until its poll times out, when a last level-triggered check
    finds the message. With nbclient's cell timeout as the poll timeout, that was a silent stall
    of the whole timeout (minutes) between two cells; in slices, it costs at most one slice.
    """

    async def get_msg(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_SLICE, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class SlicedPollClient(AsyncKernelClient):
    """nbclient's kernel client, with every channel waiting in slices (`_SlicedChannel`)."""

    shell_channel_class = Type(_SlicedChannel)
    iopub_channel_class = Type(_SlicedChannel)
    stdin_channel_class = Type(_SlicedChannel)
    control_channel_class = Type(_SlicedChannel)


class _Private:
    """What both kernel managers below share: a private IPC folder, and bookkeeping of pids."""

    def _make_private(self) -> None:
        self._private_dir: str | None = None
        if ipc_supported():
            # Short prefix: a Unix socket path must fit in ~100 bytes.
            self._private_dir = tempfile.mkdtemp(prefix="dsk-")
            self.transport = "ipc"
            self.connection_file = os.path.join(self._private_dir, "kernel.json")
            self.ip = os.path.join(self._private_dir, "ipc")

    @property
    def kernel_pid(self) -> int | None:
        provisioner = getattr(self, "provisioner", None)
        return getattr(provisioner, "pid", None) if provisioner is not None else None

    async def _start_privately(self, start, **kwargs) -> None:
        if self._private_dir is not None:
            await start(**kwargs)
        else:  # pragma: no cover - Windows: ports are chosen and bound under the lock
            with _start_lock():
                await start(**kwargs)
                client = self.client()
                client.start_channels()
                try:
                    await ensure_async(client.wait_for_ready(timeout=60))
                finally:
                    client.stop_channels()
        pid = self.kernel_pid
        if pid:
            _LIVE[pid] = self._private_dir
            _tell_watchdog(pid, self._private_dir)

    async def _shutdown_privately(self, shutdown, now: bool, restart: bool) -> None:
        pid = self.kernel_pid
        try:
            await shutdown(now=now, restart=restart)
        finally:
            if pid:
                _LIVE.pop(pid, None)
                _kill_group(pid)  # anything the kernel itself started (its session)
                _tell_watchdog(-pid)
            if not restart and self._private_dir:
                shutil.rmtree(self._private_dir, ignore_errors=True)


class PrivateKernelManager(_Private, AsyncKernelManager):
    """An `AsyncKernelManager` (nbclient's) whose kernel cannot collide with one started beside it.

    POSIX: ``transport="ipc"``; the connection file and the sockets live in a fresh private
    folder (mode 0700), removed when the kernel is shut down. Elsewhere: TCP, with the start
    serialised under `_start_lock` until the kernel answers.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._make_private()
        self.client_factory = SlicedPollClient

    async def _async_start_kernel(self, **kwargs):
        await self._start_privately(super()._async_start_kernel, **kwargs)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
        await self._shutdown_privately(super()._async_shutdown_kernel, now, restart)

    start_kernel = _async_start_kernel
    shutdown_kernel = _async_shutdown_kernel


class PrivateBlockingKernelManager(_Private, KernelManager):
    """The blocking `KernelManager` (nbval's) with the same private, race-free start."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._make_private()

    async def _async_start_kernel(self, **kwargs):
        await self._start_privately(super()._async_start_kernel, **kwargs)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False):
        await self._shutdown_privately(super()._async_shutdown_kernel, now, restart)

    start_kernel = run_sync(_async_start_kernel)
    shutdown_kernel = run_sync(_async_shutdown_kernel)


def _kill_group(pid: int) -> None:
    """SIGKILL the session a kernel leads (the kernel and any process it started)."""
    if os.name != "posix":  # pragma: no cover
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_kernels() -> int:
    """Kill every kernel this process started that is still running; return how many."""
    with _lock:
        live = list(_LIVE.items())
    for pid, folder in live:
        _kill_group(pid)
        _LIVE.pop(pid, None)
        _tell_watchdog(-pid)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    return len(live)


def describe_error(path: Path, nb, err: BaseException, timeout: float) -> str:
    """One line that names the notebook, the cell (index and first line) and what went wrong."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    index = _running_cell(nb)
    where = f"{path.name}, cell {index}" if index is not None else path.name
    if index is not None:
        first = next((line for line in nb.cells[index].source.splitlines() if line.strip()), "")
        where += f" ({first.strip()[:60]!r})"
    if isinstance(err, CellTimeoutError):
        return (f"{where}: no result after {timeout:g} s (the cell timeout; set --cell-timeout "
                "to allow longer cells)")
    if isinstance(err, DeadKernelError):
        return f"{where}: the kernel died ({err})"
    if isinstance(err, CellExecutionError):
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # no terminal colours
        return f"{where}: {text.splitlines()[-1] if text else repr(err)}"
    return f"{where}: {type(err).__name__}: {err}"


def _running_cell(nb) -> int | None:
    """Index of the code cell an execution stopped in: the last one that has started."""
    last = None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            last = i
    if last is None:
        return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)
    return last


def default_cell_timeout(full: bool | None = None) -> int:
    """Seconds one cell may run: 240 in quick mode (every notebook runs in about a minute), 3600
    in full mode (``DEEPSCOPE_FULL=1``, read from the environment unless ``full`` is given:
    full-size experiments run for minutes per cell)."""
    if full is None:
        full = os.environ.get("DEEPSCOPE_FULL", "").strip().lower() in {"1", "true", "yes", "on"}
    return 3600 if full else 240


if __name__ == "__main__":  # pragma: no cover
    sys.exit("tools.kernels is a module; see tools.execute_book")
