"""The adversarial suite's workspace: a temp dir holding everything an attack might want.

Every attack runs against a fresh workspace in a temp dir: a classmate's notebook, the teacher's
private check file and a fake home directory each hold a secret token, a sentinel file must stay
intact, and loopback listeners count what reaches them. So a failure of the sandbox shows up as a
leaked token, a changed sentinel or a hit on a listener, never as damage to the machine or the
checkout. Cleanup removes whatever a failed sandbox let an attack leave behind (processes marked
with this session's marker, SysV segments with its keys, files in /dev/shm with its name).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from deepscope.grading import gradebook_csv

from . import attack

ROOT = Path(__file__).resolve().parents[3]
MARKER = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6):06d}"  # a `sleep` argument
SHM_KEY = 0x5EC00000 + secrets.randbelow(0x10000) * 16
SECRETS = {name: f"SECRET-{name}-{secrets.token_hex(8)}" for name in
           ("env", "classmate", "checks", "home", "socket")}
# A teacher's environment variable, set before any grader process starts.
os.environ["DEEPSCOPE_TEACHER_TOKEN"] = SECRETS["env"]

PRIVATE_CHECKS = '''\
# The teacher's private checks: {secret}
import torch
from deepscope.grading import Call, Check, Fail

_PRIVATE_SALT = "{secret}"


def _private(ctx):
    x = torch.full((3,), 2.0)

    def judge(outs):
        if not (isinstance(outs[0], torch.Tensor) and torch.equal(outs[0], 2 * x)):
            raise Fail("attack(x) should return 2 * x for x = 2")

    return [Call(x)], judge


CHECKS = {{"attack": [Check("returns 2 * x (private)", 1, _private)]}}
'''


def notebook(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["answer"]
    nb.cells = [nbformat.v4.new_markdown_cell("# attack"), cell]
    return nb


@dataclass
class Workspace:
    """The temp dir of one attack and the paths an attack is told about."""

    root: Path
    submissions: Path
    classmate: Path
    checks: Path
    home: Path
    sentinel: Path
    listeners: dict = field(default_factory=dict)

    def placeholders(self) -> dict[str, str]:
        return {"@CLASSMATE@": str(self.classmate), "@SUBDIR@": str(self.submissions),
                "@CHECKS@": str(self.checks), "@HOME@": str(self.home),
                "@SENTINEL@": str(self.sentinel), "@WORKSPACE@": str(self.root),
                "@MASTER@": str(ROOT / "instructor" / "01_saliency" / "assignment.ipynb"),
                "@LIB@": str(ROOT / "lib"), "@MARKER@": MARKER, "@SHMKEY@": str(SHM_KEY),
                "@PORT@": str(self.listeners["tcp"].port),
                "@UPORT@": str(self.listeners["udp"].port),
                "@ABSTRACT@": self.listeners["abstract"].name.lstrip("\0"),
                "@UNIXPATH@": str(self.listeners["unix"].name)}


class _Listener:
    """Count connections (or datagrams) reaching a socket on this machine's loopback."""

    def __init__(self, kind: str, tmp: Path):
        self.hits = 0
        if kind == "tcp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(16)
        elif kind == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.name = (f"\0deepscope-adversarial-{MARKER}" if kind == "abstract"
                         else str(tmp / "grader.sock"))
            self.sock.bind(self.name)
            self.sock.listen(16)
        if kind in ("tcp", "udp"):
            self.port = self.sock.getsockname()[1]
        self.kind = kind
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                if self.kind == "udp":
                    self.sock.recvfrom(65536)
                else:
                    conn, _ = self.sock.accept()
                    conn.sendall(SECRETS["socket"].encode())
                    conn.close()
                self.hits += 1
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="session")
def listeners(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("listeners")
    made = {kind: _Listener(kind, tmp) for kind in ("tcp", "udp", "abstract", "unix")}
    yield made
    for listener in made.values():
        listener.close()


@pytest.fixture
def workspace(tmp_path, listeners, monkeypatch):
    """A fresh temp dir with the secrets and the sentinel an attack goes after."""
    subs = tmp_path / "submissions"
    subs.mkdir()
    classmate = subs / "classmate.ipynb"
    nbformat.write(notebook(f"# {SECRETS['classmate']}\n" + attack.CORRECT), classmate)
    checks = tmp_path / "private_checks.py"
    checks.write_text(PRIVATE_CHECKS.format(secret=SECRETS["checks"]))
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text(SECRETS["home"])
    monkeypatch.setenv("HOME", str(home))
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("original")
    for listener in listeners.values():
        listener.hits = 0
    yield Workspace(tmp_path, subs, classmate, checks, home, sentinel, listeners)
    _clean_up_after_a_failed_sandbox()


def processes_with_marker() -> list[int]:
    """Pids of processes whose command line holds this session's marker."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


def shm_segments_with_our_keys() -> list[int]:
    """Ids of SysV shared memory segments on this machine created with this session's keys."""
    ids = []
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return ids
    for line in lines:
        key, shmid = (int(v) for v in line.split()[:2])
        if SHM_KEY <= key % 2**32 < SHM_KEY + 64:
            ids.append(shmid)
    return ids


def dev_shm_files() -> list[Path]:
    return list(Path("/dev/shm").glob(f"*{MARKER}*")) if Path("/dev/shm").is_dir() else []


def _clean_up_after_a_failed_sandbox() -> None:
    for pid in processes_with_marker():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    for shmid in shm_segments_with_our_keys():
        libc.shmctl(shmid, 0, None)  # IPC_RMID
    for path in dev_shm_files():
        path.unlink(missing_ok=True)


@dataclass
class Outcome:
    """What grading one attack produced, as the teacher and the test see it."""

    report: object
    value: object  # what attack(x) returned (None when the call never returned)
    text: str  # the JSON report, the printed table and the CSV row together
    elapsed: float
    workspace: Workspace

    @property
    def problem(self) -> str:
        return self.report.questions[0].problem if self.report.questions else ""

    @property
    def messages(self) -> str:
        return "\n".join(c.message for q in self.report.questions for c in q.checks)


def grade_attack(case, workspace: Workspace, isolation: str | None = None) -> Outcome:
    """Write the case's notebook into the workspace, grade it (with the private checks), and
    collect what came out."""
    from deepscope.grading import grade

    source = attack.PRELUDE + case.source
    for key, value in workspace.placeholders().items():
        source = source.replace(key, value)
    path = workspace.submissions / case.filename
    nbformat.write(notebook(source), path)
    attack.SEEN.clear()
    kwargs = {"isolation": isolation} if isolation else {}
    start = time.perf_counter()
    checks = [workspace.checks] if case.private_checks else []
    report = grade(path, attack.ASSIGNMENT, private_checks=checks,
                   time_limit=case.time_limit, memory_limit=int(case.memory_gib * 2**30),
                   **kwargs)
    elapsed = time.perf_counter() - start
    value = attack.SEEN[0] if attack.SEEN else None
    text = "\n".join([json.dumps(report.to_dict(), default=str), report.table(),
                      gradebook_csv([report])])
    return Outcome(report, value, text, elapsed, workspace)
