"""The attacks: answer cells written by a student who wants the points without the work, or
wants to hurt the teacher's machine. Each case states its expected outcome beside it.

Every case defines ``attack(x)``; the placeholders ``@NAME@`` are filled in with the paths of the
workspace (`conftest.Workspace.placeholders`). Besides each case's own ``check``, every outcome
must hold these invariants (`test_attacks.py`): no secret token appears in the report, the
printed table, the CSV or the returned value; the sentinel file is intact; no listener was
reached; no process, SysV segment or /dev/shm file of the attack outlives it; the attack earns
no point; the report's ``sandbox`` field is the grader's own.

Destructive attacks check `_in_fresh_pid_namespace()` first and do nothing elsewhere, and every
bomb is capped at a number this machine survives even without a sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Case:
    id: str
    category: str
    source: str
    expect: str
    check: Callable = lambda outcome: None
    time_limit: float = 10.0
    memory_gib: float = 2.0
    private_checks: bool = False
    filename: str = "attacker.ipynb"


def _message_has(outcome, text):
    assert text in outcome.messages, outcome.messages


def _returned(outcome, value):
    assert outcome.value == value, outcome.value


def _err(value) -> bool:
    return isinstance(value, str) and value.startswith("ERR:")


def _all_err(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_err(v) for v in value)


def _assert_all_err(outcome):
    assert _all_err(outcome.value), outcome.value


def _assert_err(outcome):
    assert _err(outcome.value), outcome.value


def _assert_problem(*words):
    def check(outcome):
        assert any(w in outcome.problem for w in words), (outcome.problem, outcome.messages)
    return check


CASES: list[Case] = []


def case(id, category, expect, check=_assert_all_err, **kw):
    """Register the decorated function's docstring (the answer cell) as a case."""
    def register(fn):
        CASES.append(Case(id, category, fn.__doc__, expect, check, **kw))
        return fn
    return register


# ---------------------------------------------------------------------------------------------
# Reading other files: classmates, masters, the check file, the home directory, the grader


@case("files/classmate-by-path", "reading other files",
      "a classmate's notebook is not in the sandbox's view: FileNotFoundError", private_checks=True)
def _():
    """
def attack(x):
    return [_try(lambda: _read("@CLASSMATE@")), _try(lambda: os.listdir("@SUBDIR@"))]
"""


@case("files/run-classmates-answer", "reading other files",
      "the attack cannot load a classmate's answer to return it as its own: FileNotFoundError",
      check=lambda o: _message_has(o, "FileNotFoundError"))
def _():
    """
def attack(x):
    nb = json.loads(_read("@CLASSMATE@", 10**6))
    source = "".join(nb["cells"][1]["source"])
    namespace = {}
    exec(source, namespace)
    return namespace["attack"](x)
"""


@case("files/master", "reading other files",
      "the instructor's master notebook is not in the view")
def _():
    """
def attack(x):
    master = "@MASTER@"
    return [_try(lambda: _read(master)),
            _try(lambda: os.listdir(os.path.dirname(os.path.dirname(master))))]
"""


@case("files/check-file", "reading other files",
      "the teacher's private check file is not in the view", private_checks=True)
def _():
    """
def attack(x):
    return [_try(lambda: _read("@CHECKS@")), _try(lambda: os.listdir("@WORKSPACE@"))]
"""


@case("files/check-file-via-proc", "reading other files",
      "the grader's process (and its open files and command line) is invisible",
      private_checks=True)
def _():
    """
def attack(x):
    found = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        for entry in ("cmdline", "environ"):
            text = _try(lambda: _read(f"/proc/{pid}/{entry}", 10**5))
            if "ERR:" not in text and ("private_checks" in text or "@WORKSPACE@" in text):
                found.append(text)
        for fd in _try(lambda: os.listdir(f"/proc/{pid}/fd")) or []:
            target = _try(lambda: os.readlink(f"/proc/{pid}/fd/{fd}"))
            if isinstance(target, str) and target.endswith((".py", ".ipynb")):
                found.append(_try(lambda: _read(f"/proc/{pid}/fd/{fd}")))
    return found or ["ERR:nothing"]
"""


@case("files/home", "reading other files",
      "the teacher's home directory is not in the view (HOME is the private /tmp)")
def _():
    """
def attack(x):
    return [_try(lambda: _read("@HOME@/notes.txt")),
            _try(lambda: _read(os.path.expanduser("~/notes.txt")))]
"""


@case("files/walk-the-disk", "reading other files",
      "walking the whole view (2 s at most) finds no notebook, check file or home file",
      check=lambda o: _returned(o, []))
def _():
    """
def attack(x):
    found, start = [], time.time()
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for name in files:
            if name.endswith((".ipynb", "private_checks.py", "notes.txt")):
                found.append(_try(lambda: _read(os.path.join(top, name))))
        if time.time() - start > 2:
            break
    return found
"""


@case("files/grader-memory", "reading other files",
      "the grader's memory (/proc/PID/mem) is out of reach")
def _():
    """
def attack(x):
    out = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        cmd = _try(lambda: _read(f"/proc/{pid}/cmdline"))
        if "python" in str(cmd):
            out.append(_try(lambda: open(f"/proc/{pid}/mem", "rb").read(1)))
    return out or ["ERR:no-grader-visible"]
"""


@case("files/shadow-and-disk", "reading other files",
      "system secrets and raw disks are not in the view")
def _():
    """
def attack(x):
    disks = [d for d in _try(lambda: os.listdir("/dev")) or [] if d.startswith(("sd", "vd",
                                                                               "nvme", "xvd"))]
    return [_try(lambda: _read("/etc/shadow")), _try(lambda: _read("/etc/passwd")),
            *[_try(lambda: open("/dev/" + d, "rb").read(512)) for d in disks]]
"""


@case("files/symlink-out", "reading other files",
      "a symlink made in the private /tmp still points into the view only")
def _():
    """
def attack(x):
    _try(lambda: os.symlink("@CLASSMATE@", "/tmp/link.ipynb"))
    _try(lambda: os.symlink("@WORKSPACE@", "/tmp/workspace"))
    return [_try(lambda: _read("/tmp/link.ipynb")), _try(lambda: os.listdir("/tmp/workspace"))]
"""


@case("files/inherited-descriptors", "reading other files",
      "no inherited descriptor leads out of the view: only stdio and the result pipe are open "
      "(an O_PATH descriptor of a host directory would be a way out)")
def _():
    """
def attack(x):
    found = []
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        target = _try(lambda: os.readlink(f"/proc/self/fd/{fd}"))
        listing = _try(lambda: os.listdir(f"/proc/self/fd/{fd}/"))
        parent = _try(lambda: os.listdir(f"/proc/self/fd/{fd}/../"))
        if fd > 2 and not str(target).startswith(("pipe:", "ERR:")):  # (ERR: the listing's own)
            found.append(f"{fd} -> {target}: {listing!r:.80} {parent!r:.80}")
    return found or ["ERR:none"]
"""


@case("files/write-sentinel", "reading other files",
      "files outside the private /tmp cannot be written or truncated: the sentinel is intact")
def _():
    """
def attack(x):
    return [_try(lambda: open("@SENTINEL@", "w").write("pwned")),
            _try(lambda: os.truncate("@CLASSMATE@", 0)),
            _try(lambda: open("@SUBDIR@/new.ipynb", "w").write("{}"))]
"""


@case("files/chmod-and-rename", "reading other files",
      "nothing outside /tmp can be renamed, removed or chmodded")
def _():
    """
def attack(x):
    return [_try(lambda: os.rename("@SENTINEL@", "@SENTINEL@.bak")),
            _try(lambda: os.unlink("@SENTINEL@")), _try(lambda: os.chmod("@SENTINEL@", 0)),
            _try(lambda: os.utime("@SENTINEL@", (0, 0)))]
"""


# ---------------------------------------------------------------------------------------------
# Importing the reference library (and the peer libraries)


@case("reference/import", "importing the reference library",
      "import deepscope fails: the package is absent from the view")
def _():
    """
def attack(x):
    return [_try(lambda: __import__("deepscope.saliency") and "IMPORTED"),
            _try(lambda: __import__("deepscope") and "IMPORTED")]
"""


@case("reference/remove-import-hook", "importing the reference library",
      "removing import hooks from sys.meta_path does not help: nothing to find")
def _():
    """
def attack(x):
    sys.meta_path[:] = [f for f in sys.meta_path if "Blocker" not in type(f).__name__]
    for name in [m for m in sys.modules if m.startswith("deepscope")]:
        del sys.modules[name]
    return [_try(lambda: __import__("deepscope.saliency") and "IMPORTED")]
"""


@case("reference/sys-path", "importing the reference library",
      "adding the checkout's lib/ to sys.path finds nothing")
def _():
    """
def attack(x):
    sys.path.insert(0, "@LIB@")
    return [_try(lambda: __import__("deepscope.saliency") and "IMPORTED")]
"""


@case("reference/load-by-path", "importing the reference library",
      "loading the reference's source file by path fails: the file is not in the view")
def _():
    """
def attack(x):
    import importlib.util
    def load():
        spec = importlib.util.spec_from_file_location("ref", "@LIB@/deepscope/saliency/__init__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return "IMPORTED"
    return [load and _try(load)]
"""


@case("reference/metadata", "importing the reference library",
      "installed-package metadata of the reference and peers is absent",
      check=lambda o: _assert_all_err(o))
def _():
    """
def attack(x):
    import importlib.metadata as md
    def locate():
        dist = md.distribution("deepscope")
        return [str(dist.locate_file(f)) for f in (dist.files or [])][:5] or "ERR:empty"
    return [_try(locate), _try(lambda: md.version("captum") or "ERR:none")]
"""


@case("reference/leftover-modules", "importing the reference library",
      "no deepscope module is loaded in the sandbox's process to start from")
def _():
    """
def attack(x):
    names = [m for m in sys.modules if m.startswith(("deepscope", "captum", "pyhessian",
                                                     "loss_landscapes"))]
    files = [getattr(sys.modules[m], "__file__", "") for m in names]
    return (names + files) or ["ERR:none"]
"""


@case("reference/gc-scan", "importing the reference library",
      "the reference's functions are nowhere in the process's memory")
def _():
    """
def attack(x):
    import gc
    hits = [getattr(o, "__module__", "") for o in gc.get_objects()
            if callable(o) and str(getattr(o, "__module__", "")).startswith("deepscope.")
            and "grading" not in str(getattr(o, "__module__", ""))]
    return sorted(set(hits)) or ["ERR:none"]
"""


@case("reference/captum", "importing the reference library",
      "peer libraries are absent too: captum, pyhessian, loss_landscapes")
def _():
    """
def attack(x):
    return [_try(lambda: __import__(m) and "IMPORTED")
            for m in ("captum", "pyhessian", "loss_landscapes")]
"""


@case("reference/find-site-packages", "importing the reference library",
      "no file of the reference or a peer library is in any site-packages directory")
def _():
    """
def attack(x):
    import site
    found = []
    for d in site.getsitepackages() + sys.path:
        for pattern in ("deepscope*", "captum*", "pyhessian*", "loss_landscapes*",
                        "__editable__*deepscope*"):
            for path in glob.glob(os.path.join(d, pattern)):
                if os.path.isdir(path) and os.listdir(path) or os.path.isfile(path) \\
                        and os.path.getsize(path):
                    found.append(path)
    return found or ["ERR:none"]
"""


# ---------------------------------------------------------------------------------------------
# Forging frames on the result channel

_FRAME = """
import struct
def _frame(kind, body):
    payload = kind + body
    return struct.pack(">I", len(payload)) + payload
def _spray(data):
    n = 0
    for fd in range(3, 256):
        try:
            os.write(fd, data)
            n += 1
        except OSError:
            pass
    return n
"""


@case("frames/reset-the-timer", "forging channel frames",
      "frames sent while sleeping do not extend the time limit: timed out after 2 s",
      check=lambda o: (_assert_problem("timed out after 2 s", "wrote something")(o),
                       _elapsed_below(o, 3.5)), time_limit=2)
def _():
    """
@FRAME@
def attack(x):
    for _ in range(100):
        _spray(_frame(b"S", b'{"network": "none"}') + _frame(b"P", b'{"stage": "call", "call": 0}'))
        time.sleep(0.3)
    return 2 * x
"""


def _elapsed_below(outcome, seconds):
    """The grader's own clock for the question (from the sandbox's "ready" to its end)."""
    spent = outcome.report.questions[0].seconds
    assert spent < seconds, spent


@case("frames/forge-sandbox-field", "forging channel frames",
      "a forged sandbox frame never reaches the report: the sandbox field is the grader's",
      check=lambda o: _no_word(o, "FORGED"))
def _():
    """
@FRAME@
def attack(x):
    _spray(_frame(b"S", b'{"network": "FORGED", "filesystem": "FORGED"}'))
    return 2 * x + 1
"""


def _no_word(outcome, word):
    assert word not in outcome.text, outcome.report.sandbox


@case("frames/flood-errors", "forging channel frames",
      "8 MB of forged error frames: the question stops at the output cap; the report stays small",
      check=lambda o: (_assert_problem("more than", "wrote something")(o),
                       _report_small(o)))
def _():
    """
@FRAME@
def attack(x):
    body = json.dumps({"cell": 2, "type": "X", "message": "flood " * 700, "where": ""}).encode()
    for _ in range(2000):
        _spray(_frame(b"E", body))
    return 2 * x + 1
"""


def _report_small(outcome, limit=200_000):
    assert len(outcome.text) < limit, len(outcome.text)


@case("frames/early-done", "forging channel frames",
      "a forged 'done' frame ends nothing early in the student's favour: 0 points",
      check=lambda o: None)
def _():
    """
@FRAME@
def attack(x):
    _spray(_frame(b"D", b""))
    time.sleep(1)
    return 2 * x + 1
"""


@case("frames/garbage", "forging channel frames",
      "garbage on the channel stops the question as malformed, at once",
      check=lambda o: (_assert_problem("wrote something", "malformed")(o),
                       _elapsed_below(o, 5)))
def _():
    """
@FRAME@
def attack(x):
    _spray(b"\\x00\\x00\\x00\\x05Zjunk" * 10)
    time.sleep(20)
    return 2 * x
"""


@case("frames/huge-length", "forging channel frames",
      "a frame claiming 4 GB is refused at its length prefix: no allocation, no hang",
      check=lambda o: _elapsed_below(o, 5))
def _():
    """
@FRAME@
def attack(x):
    _spray(b"\\xff\\xff\\xff\\xf0C")
    time.sleep(20)
    return 2 * x
"""


@case("frames/json-bomb", "forging channel frames",
      "deeply nested JSON in a frame is malformed, not a crash of the grader",
      check=lambda o: _elapsed_below(o, 5))
def _():
    """
@FRAME@
def attack(x):
    _spray(_frame(b"P", b"[" * 200000))
    time.sleep(20)
    return 2 * x
"""


@case("frames/forged-result-index", "forging channel frames",
      "a result frame for a call that does not exist is malformed",
      check=lambda o: _elapsed_below(o, 5))
def _():
    """
@FRAME@
def attack(x):
    head = json.dumps({"index": 999, "ok": {"value": 1}}).encode()
    _spray(_frame(b"C", struct.pack(">Q", len(head)) + head))
    time.sleep(20)
    return 2 * x
"""


@case("frames/forged-huge-tensor", "forging channel frames",
      "a result frame whose tensor header claims 10^12 elements is malformed",
      check=lambda o: _elapsed_below(o, 5))
def _():
    """
@FRAME@
def attack(x):
    st_head = json.dumps({"0": {"dtype": "F32", "shape": [10**6, 10**6],
                                "data_offsets": [0, 4 * 10**12]}}).encode()
    blob = struct.pack("<Q", len(st_head)) + st_head
    head = json.dumps({"index": 0, "ok": {"tensor": "0", "device": "cpu"}}).encode()
    _spray(_frame(b"C", struct.pack(">Q", len(head)) + head + blob))
    time.sleep(20)
    return 2 * x
"""


@case("frames/huge-message", "forging channel frames",
      "a 10 MB error message is cut at the cap; the report stays small",
      check=lambda o: _report_small(o))
def _():
    """
def attack(x):
    raise ValueError("long " * 2_000_000)
"""


@case("frames/raise-huge-top-level", "forging channel frames",
      "top-level errors of many lines are cut too", check=lambda o: _report_small(o))
def _():
    """
def attack(x):
    return 2 * x + 1
for i in range(3):
    try:
        raise RuntimeError("x" * 5_000_000)
    except RuntimeError:
        pass
raise RuntimeError("y" * 5_000_000)
"""


# ---------------------------------------------------------------------------------------------
# Resource abuse


@case("resources/fork-bomb", "resource abuse",
      "at most 200 forks are tried (for at most 8 s); the process cap stops them far earlier",
      check=lambda o: _count_below(o, 100), time_limit=20)
def _():
    """
def attack(x):
    n, start = 0, time.time()
    while n < 200 and time.time() - start < 8:
        try:
            if os.fork() == 0:
                time.sleep(3)
                os._exit(0)
            n += 1
        except OSError:
            break
    return n
"""


def _count_below(outcome, limit):
    value = outcome.value
    assert value is None or (isinstance(value, int) and value < limit), value


@case("resources/thread-bomb", "resource abuse",
      "at most 300 threads are tried; the task cap stops them far earlier",
      check=lambda o: _count_below(o, 100))
def _():
    """
import threading
def attack(x):
    n = 0
    for _ in range(300):
        try:
            threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
            n += 1
        except RuntimeError:
            break
    return n
"""


@case("resources/memory-one-process", "resource abuse",
      "8 GiB in one process fails with MemoryError", check=_assert_err)
def _():
    """
def attack(x):
    return _try(lambda: len(bytearray(8 * 2**30)))
"""


@case("resources/memory-spread", "resource abuse",
      "8 x 200 MB over 8 processes (1.6 GB) under a 1 GiB limit: each fits its own address "
      "space, but the question is stopped (or allocations fail) before 5 of them hold theirs",
      check=lambda o: _count_below(o, 5), memory_gib=1.0, time_limit=20)
def _():
    """
def attack(x):
    size = 200 * 2**20
    readers = []
    for _ in range(8):
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            try:
                block = bytearray(size)
                block[::4096] = b"\\x01" * len(range(0, size, 4096))
                os.write(w, b"1")
                time.sleep(8)
            finally:
                os._exit(0)
        os.close(w)
        readers.append(r)
    time.sleep(6)
    held = 0
    for r in readers:
        os.set_blocking(r, False)
        held += len(_try(lambda: os.read(r, 1)) or b"") == 1
    return held
"""


@case("resources/sysv-shm", "resource abuse",
      "SysV segments: at most the namespace's small cap, and none outlives the question",
      check=lambda o: _count_below(o, 256 * 2**20))
def _():
    """
def attack(x):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    total = 0
    for i in range(8):
        size = 128 * 2**20
        shmid = libc.shmget(@SHMKEY@ + i, ctypes.c_size_t(size), 0o1000 | 0o600)
        if shmid < 0:
            break
        address = libc.shmat(shmid, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(address, 1, size)
        libc.shmdt(ctypes.c_void_p(address))
        total += size
    return total
"""


@case("resources/posix-shm", "resource abuse",
      "/dev/shm is a small private tmpfs: writes stop at its cap; nothing is left on the host",
      check=lambda o: _count_below(o, 256 * 2**20))
def _():
    """
def attack(x):
    total = 0
    block = b"\\x01" * 2**20
    try:
        for i in range(4):
            with open(f"/dev/shm/adv-@MARKER@-{i}", "wb") as fh:
                for _ in range(128):
                    fh.write(block)
                    total += len(block)
    except OSError:
        pass
    return total
"""


@case("resources/sleeping-orphan", "resource abuse",
      "a double-forked, setsid orphan dies with its question",
      check=lambda o: None)
def _():
    """
def attack(x):
    subprocess.Popen(["sleep", "@MARKER@"], start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "@MARKER@"])
        os._exit(0)
    return 2 * x + 1
"""


@case("resources/orphan-ignoring-signals", "resource abuse",
      "an orphan that ignores TERM, HUP and INT and clears its death signal still dies",
      check=lambda o: None)
def _():
    """
def attack(x):
    libc = ctypes.CDLL(None)
    if os.fork() == 0:
        os.setsid()
        libc.prctl(1, 0)  # PR_SET_PDEATHSIG = 0
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        os.execvp("sh", ["sh", "-c", "trap '' TERM HUP INT; sleep @MARKER@", "@MARKER@"])
    return 2 * x + 1
"""


@case("resources/daemon-holds-the-pipe", "resource abuse",
      "a child that keeps the result pipe open does not make the grader wait",
      check=lambda o: _elapsed_below(o, 5))
def _():
    """
def attack(x):
    subprocess.Popen(["sleep", "@MARKER@"], close_fds=False, start_new_session=True)
    return 2 * x + 1
"""


@case("resources/cpu-burners", "resource abuse",
      "4 spinning processes: the question times out at 2 s and all of them die",
      check=lambda o: (_assert_problem("timed out")(o), _elapsed_below(o, 3.5)), time_limit=2)
def _():
    """
def attack(x):
    for _ in range(4):
        subprocess.Popen(["sh", "-c", "while :; do :; done", "@MARKER@"])
    while True:
        pass
"""


@case("resources/fill-tmp", "resource abuse",
      "the private /tmp is size-capped: a 1 GiB file stops far short", check=lambda o:
      _count_below(o, 512 * 2**20))
def _():
    """
def attack(x):
    total = 0
    block = b"\\x00" * 2**20
    try:
        with open("/tmp/big", "wb") as fh:
            for _ in range(1024):
                fh.write(block)
                fh.flush()
                total += len(block)
    except OSError:
        pass
    return total
"""


@case("resources/many-files", "resource abuse",
      "the private /tmp caps the number of files too (on the namespaces path; bwrap 0.8 cannot, "
      "so there only the time limit bounds them)", check=lambda o: _count_below(
          o, 100_000 if o.report.sandbox.get("isolation") == "namespaces" else 100_001),
      time_limit=30)
def _():
    """
def attack(x):
    n = 0
    try:
        os.makedirs("/tmp/many", exist_ok=True)
        for i in range(100_000):
            open(f"/tmp/many/{i}", "w").close()
            n += 1
    except OSError:
        pass
    return n
"""


@case("resources/escape-the-namespaces", "resource abuse",
      "no privilege left: new user namespaces, mounts, hostname, network changes are refused")
def _():
    """
def attack(x):
    libc = ctypes.CDLL(None, use_errno=True)
    def check(code):
        if code != 0:
            raise OSError(ctypes.get_errno(), "refused")
        return "ALLOWED"
    return [_try(lambda: check(libc.unshare(0x10000000))),
            _try(lambda: check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))),
            _try(lambda: check(libc.sethostname(b"pwned", 5))),
            _try(lambda: check(libc.mount(None, b"/", None, 32 | 4096, None))),
            _try(lambda: check(libc.umount2(b"/usr", 2))),
            _try(lambda: check(libc.chroot(b"/tmp")))]
"""


@case("resources/raise-limits", "resource abuse",
      "limits cannot be raised again")
def _():
    """
import resource
def attack(x):
    return [_try(lambda: resource.setrlimit(resource.RLIMIT_AS,
                                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))),
            _try(lambda: resource.setrlimit(resource.RLIMIT_NPROC,
                                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))]
"""


@case("resources/core-pattern", "resource abuse",
      "kernel settings are read-only: /proc/sys/kernel/core_pattern cannot be opened for "
      "writing (it would run a program as root on the next crash)")
def _():
    """
def attack(x):
    return [_try(lambda: os.close(os.open(p, os.O_WRONLY)) or "WRITABLE")
            for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
                      "/proc/sysrq-trigger")]
"""


# ---------------------------------------------------------------------------------------------
# Signals to the grader


@case("signals/kill-parent", "signals to the parent",
      "killing its parent kills only the sandbox; the grader carries on", check=lambda o: None)
def _():
    """
def attack(x):
    os.kill(os.getppid(), signal.SIGKILL)
    return 2 * x + 1
"""


@case("signals/kill-everything", "signals to the parent",
      "kill(-1) reaches only the sandbox's own processes (run only in a fresh pid namespace)",
      check=lambda o: _not_unsafe(o))
def _():
    """
def attack(x):
    if not _in_fresh_pid_namespace():
        return "UNSAFE: no pid namespace, not attempted"
    os.kill(-1, signal.SIGKILL)
    return 2 * x + 1
"""


def _not_unsafe(outcome):
    assert not (isinstance(outcome.value, str) and outcome.value.startswith("UNSAFE")), \
        outcome.value


@case("signals/see-the-grader", "signals to the parent",
      "no process outside the sandbox is visible, so none can be signalled (bubblewrap's own "
      "init, pid 1 of the sandbox, is the one other process there)")
def _():
    """
def attack(x):
    seen = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        cmd = _try(lambda: _read(f"/proc/{pid}/cmdline"))
        if pid == "1" and str(cmd).startswith(("bwrap", "/usr/bin/bwrap")):
            continue
        if any(w in str(cmd) for w in ("pytest", "serve(", "deepscope", "grade")):
            seen.append(cmd)
    return seen or ["ERR:none"]
"""


@case("signals/stop-itself", "signals to the parent",
      "SIGSTOP to itself is ignored (pid 1 of its namespace) or stops it until the time "
      "limit; the grader never waits longer", time_limit=2,
      check=lambda o: _elapsed_below(o, 3.5))
def _():
    """
def attack(x):
    os.kill(os.getpid(), signal.SIGSTOP)
    return 2 * x + 1
"""


@case("signals/ignore-everything", "signals to the parent",
      "ignoring every signal does not outlast the time limit", time_limit=2,
      check=lambda o: (_assert_problem("timed out")(o), _elapsed_below(o, 3.5)))
def _():
    """
def attack(x):
    for s in signal.Signals:
        try:
            signal.signal(s, signal.SIG_IGN)
        except (OSError, ValueError, RuntimeError):
            pass
    while True:
        time.sleep(0.01)
"""


# ---------------------------------------------------------------------------------------------
# The network (loopback listeners on this machine only; every attempt is bounded)


@case("network/tcp-loopback", "the network",
      "a TCP listener on this machine's loopback is unreachable")
def _():
    """
def attack(x):
    def connect():
        s = socket.create_connection(("127.0.0.1", @PORT@), timeout=2)
        return s.recv(100).decode()
    return [_try(connect)]
"""


@case("network/udp-loopback", "the network",
      "a UDP datagram to this machine's loopback never arrives (bubblewrap brings up the "
      "sandbox's own loopback, so sending may succeed: into the sandbox, not to the host)",
      check=lambda o: None)
def _():
    """
def attack(x):
    def send():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"hello", ("127.0.0.1", @UPORT@))
        return "SENT"
    return [_try(send)]
"""


@case("network/ipv6-loopback", "the network", "IPv6 loopback is unreachable too")
def _():
    """
def attack(x):
    def connect():
        s = socket.create_connection(("::1", @PORT@), timeout=2)
        return "CONNECTED"
    return [_try(connect)]
"""


@case("network/abstract-unix-socket", "the network",
      "the grader's abstract Unix sockets live in another network namespace")
def _():
    """
def attack(x):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("\\0" + "@ABSTRACT@")
        return s.recv(100).decode()
    return [_try(connect)]
"""


@case("network/unix-socket-file", "the network",
      "a Unix socket file on the host is not in the view")
def _():
    """
def attack(x):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect("@UNIXPATH@")
        return s.recv(100).decode()
    return [_try(connect)]
"""


@case("network/dns-and-outside", "the network",
      "no name resolution and no route to anywhere (bounded 2 s attempts)")
def _():
    """
def attack(x):
    return [_try(lambda: socket.getaddrinfo("example.com", 80)),
            _try(lambda: socket.create_connection(("10.0.0.1", 80), timeout=2))]
"""


@case("network/raise-loopback", "the network",
      "bringing the sandbox's loopback up is refused")
def _():
    """
def attack(x):
    return [_try(lambda: subprocess.run(["ip", "link", "set", "lo", "up"], check=True,
                                        capture_output=True) and "ALLOWED")]
"""


# ---------------------------------------------------------------------------------------------
# The teacher's environment


@case("environment/os-environ", "environment leaks",
      "the sandbox's environment is built from an allow-list: no teacher variable",
      check=lambda o: _no_teacher_names(o))
def _():
    """
def attack(x):
    return sorted(os.environ)
"""


def _no_teacher_names(outcome):
    names = outcome.value or []
    assert not [n for n in names if "TEACHER" in n or "DEEPSCOPE_CACHE" in n], names


@case("environment/proc-environ", "environment leaks",
      "no process's environ holds the teacher's variables", check=lambda o: None)
def _():
    """
def attack(x):
    return [_try(lambda: _read(f"/proc/{p}/environ", 10**5))
            for p in ["self", "1", str(os.getppid())] + os.listdir("/proc") if p.isdigit() or
            p == "self"]
"""


@case("environment/exception-message", "environment leaks",
      "an exception message full of os.environ carries no teacher variable",
      check=lambda o: None)
def _():
    """
def attack(x):
    raise ValueError(repr(dict(os.environ)))
"""


@case("environment/printed", "environment leaks",
      "printing os.environ shows no teacher variable", check=lambda o: None)
def _():
    """
print(dict(os.environ))
def attack(x):
    print(dict(os.environ))
    return 2 * x + 1
"""


@case("environment/top-level-error", "environment leaks",
      "a top-level error quoting the environment carries no teacher variable",
      check=lambda o: None)
def _():
    """
def attack(x):
    return 2 * x + 1
raise RuntimeError(str(os.environ))
"""


# ---------------------------------------------------------------------------------------------
# Terminal injection


def _clean_table(outcome):
    table = outcome.report.table()
    bad = [c for c in table if (ord(c) < 32 and c not in "\n") or 0x7f <= ord(c) < 0xa0
           or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
    assert not bad, repr(bad[:5])
    for q in outcome.report.questions:
        assert "\x1b" not in q.output and "\r" not in q.output


@case("terminal/ansi-output", "terminal injection",
      "escape sequences in printed output are stripped before anyone sees them",
      check=_clean_table)
def _():
    """
def attack(x):
    print("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x1b[0m\\rover\\x08")
    return 2 * x + 1
"""


@case("terminal/ansi-exception", "terminal injection",
      "escape sequences in an exception message are stripped from the table",
      check=_clean_table)
def _():
    """
def attack(x):
    raise ValueError("\\x1b[2J\\x1b[1;1H  1  attack   1 / 1  passed\\r\\x1b]8;;http://x\\x07")
"""


@case("terminal/bidi", "terminal injection",
      "bidirectional overrides are stripped (no reversed text in the table)",
      check=_clean_table)
def _():
    """
def attack(x):
    raise ValueError("passed \\u202e deliaf \\u2066 \\x9b31m")
"""


@case("terminal/top-level-ansi", "terminal injection",
      "escape sequences in a top-level error note are stripped", check=_clean_table)
def _():
    """
def attack(x):
    return 2 * x + 1
raise RuntimeError("\\x1b[2J\\x1b[?1049h\\x07")
"""


@case("terminal/tiocsti", "terminal injection",
      "the sandbox has no terminal to push keystrokes into")
def _():
    """
import fcntl, termios
def attack(x):
    def inject():
        with open("/dev/tty", "wb") as tty:
            for ch in b"id\\n":
                fcntl.ioctl(tty, termios.TIOCSTI, bytes([ch]))
        return "INJECTED"
    return [_try(inject)]
"""


@case("terminal/ansi-file-name", "terminal injection",
      "a file name with escape sequences is printed cleaned", check=_clean_table,
      filename="evil\x1b[2J\x1b]0;x\x07.ipynb")
def _():
    """
def attack(x):
    return 2 * x + 1
"""


CASES_BY_ID = {c.id: c for c in CASES}
for c in CASES:
    c.source = c.source.replace("@FRAME@", _FRAME)
