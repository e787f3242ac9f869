"""A private JupyterLab server on loopback and Debian's headless Chromium, for the browser test.

`lab_server` starts ``python -m jupyterlab`` from this environment on 127.0.0.1 with a free port,
a random token and its own config/data/runtime/settings/workspace folders, waits for
``/api/status`` and always shuts the server (and its kernels) down, also when the test fails.
`find_chromium` locates the system browser (installing it with apt-get where that is possible);
the book never downloads a browser (no ``playwright install``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# User settings: no news or update pop-ups over the notebook; every cell stays in the DOM
# (JupyterLab 4 may virtualise cells out of view otherwise).
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def find_chromium(install: bool = True) -> tuple[str | None, str]:
    """Return (path of Debian's Chromium or None, how it was found or why it is missing).

    When it is missing, running as root with apt-get (as on CI), install the Debian package.
    """
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM, "present"
    if not install:
        return None, f"{CHROMIUM} is missing"
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, (f"{CHROMIUM} is missing and cannot be installed here (needs root and "
                      "apt-get: `apt-get install -y chromium chromium-driver`)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    start = time.perf_counter()
    for cmd in (["apt-get", "install", "-y", "-qq", "chromium"],
                ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        if os.access(CHROMIUM, os.X_OK):
            return CHROMIUM, f"installed with apt-get in {time.perf_counter() - start:.0f} s"
    return None, f"{CHROMIUM} is missing and `apt-get install chromium` failed"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab: its base URL, token, served folder and log file."""

    url: str
    token: str
    root: Path
    log: Path
    work: Path
    process: subprocess.Popen
    runtime: Path  # the server's runtime folder: connection files and kernel sockets

    def notebook_url(self, relpath: str) -> str:
        return f"{self.url}/lab/tree/{relpath}?token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}?token={self.token}", method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()


def kernel_env(cache: Path) -> dict[str, str]:
    """The server's (and so the kernels') environment: one torch thread unless told otherwise,
    the inline matplotlib backend (an explorer's figure must become an image), the checkpoint
    cache of the run if it has one."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the test runner sets Agg; figures would become plain text
    env.setdefault("DEEPSCOPE_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", env["DEEPSCOPE_THREADS"])
    env.setdefault("DEEPSCOPE_CACHE", str(cache))
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


@contextlib.contextmanager
def lab_server(root: Path, work: Path, startup_timeout: float = 120):
    """Serve ``root`` with a fresh JupyterLab; yield a `LabServer`; always shut it down.

    ``work`` receives the server's private Jupyter folders and its log.
    """
    folders = {name: work / name for name in ("config", "data", "settings", "workspaces")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    # The runtime folder holds the kernels' IPC sockets, whose paths must fit in ~100 bytes:
    # a short private folder of its own, not one below pytest's long temporary paths.
    folders["runtime"] = Path(tempfile.mkdtemp(prefix="dsl-"))
    for name, settings in USER_SETTINGS.items():
        target = folders["settings"] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    env = kernel_env(work / "cache")
    env.update(JUPYTER_CONFIG_DIR=str(folders["config"]), JUPYTER_DATA_DIR=str(folders["data"]),
               JUPYTER_RUNTIME_DIR=str(folders["runtime"]),
               JUPYTERLAB_SETTINGS_DIR=str(folders["settings"]),
               JUPYTERLAB_WORKSPACES_DIR=str(folders["workspaces"]))
    token, log = secrets.token_hex(24), work / "jupyterlab.log"
    server = None
    try:
        for _attempt in range(3):  # another process may take the free port before the server
            server = _start(root, work, env, token, log, folders["runtime"])
            if _wait_until_up(server, startup_timeout):
                break
            shutdown(server)
        else:
            raise RuntimeError("JupyterLab lost its port three times:\n" + log.read_text()[-3000:])
        yield server
    finally:
        if server is not None:
            shutdown(server)
        shutil.rmtree(folders["runtime"], ignore_errors=True)


def _start(root: Path, work: Path, env: dict, token: str, log: Path,
           runtime: Path) -> LabServer:
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           # Kernels on IPC sockets in this server's private runtime folder: no TCP ports to
           # race for with kernels other processes start at the same moment (tools.kernels).
           *(["--KernelManager.transport=ipc"] if os.name == "posix" else [])]
    with open(log, "w") as log_file:
        process = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LabServer(f"http://127.0.0.1:{port}", token, root, log, work, process, runtime)


def _wait_until_up(server: LabServer, timeout: float) -> bool:
    """Wait for ``/api/status``; False if the port was taken; raise on any other failure."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            text = server.log.read_text()
            if "already in use" in text:
                return False
            raise RuntimeError(f"JupyterLab exited with {server.process.returncode} on "
                               "start-up:\n" + text[-3000:])
        try:
            server.api("/api/status", timeout=2)
            return True
        except OSError as err:
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer /api/status within {timeout:.0f} "
                                   "s:\n" + server.log.read_text()[-3000:]) from err
            time.sleep(0.25)


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (Linux /proc; empty elsewhere)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def shutdown(server: LabServer, grace: float = 15) -> None:
    """Stop the server and its kernels: the shutdown API first, then signals to the server's
    process group and to any kernel it started that is still alive."""
    process = server.process
    kernels = _descendants(process.pid)  # kernels run in sessions of their own
    if process.poll() is None:
        with contextlib.suppress(OSError):
            server.api("/api/shutdown", method="POST", timeout=5)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):  # the server's own session: it and its kernels
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(5)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in kernels:
        with contextlib.suppress(OSError):
            # only a kernel of this server: its connection file lies in our runtime folder
            if str(server.runtime).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
