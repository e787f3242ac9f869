#!/usr/bin/env python3
"""The book's two commands. Each one sets up what a fresh machine lacks, then does its job.

    python3 book.py lab              # JupyterLab on chapters/  (--headless: execute every chapter;
                                     #   --site: execute them and write a static HTML site)
    python3 book.py test             # lint, unit tests + coverage, notebooks, grader, browser

Set-up (both commands): a virtual environment in .venv (or the current interpreter with
--no-venv, e.g. inside conda), torch (a CPU build on machines without an NVIDIA GPU: never
gigabytes of CUDA wheels), then this package, editable, with its extras. A stamp file skips the
install when pyproject.toml has not changed. Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DEEPSCOPE_VENV", ROOT / ".venv"))
EXTRAS = "dev,oracle,text"
TORCH_CPU = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
COVERAGE_MIN = 90


# ---------------------------------------------------------------------------------------------
# Set-up


def _run(cmd, **kwargs) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], **kwargs)


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _has_nvidia_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.call(["nvidia-smi", "-L"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) == 0


def _local_cpu_wheel(python: str) -> str | None:
    """Return a local CPU wheel of TORCH_CPU that pip's configured find-links offer, if any."""
    folder = tempfile.mkdtemp(prefix="deepscope-torch-")
    code = subprocess.call([python, "-m", "pip", "download", "--no-deps", "--no-index", "-q",
                            "-d", folder, TORCH_CPU],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wheels = [f for f in os.listdir(folder) if f.endswith(".whl") and "+cpu" in f]
    return os.path.join(folder, wheels[0]) if code == 0 and wheels else None


def _install_torch(python: str) -> None:
    """Install torch unless present: the CUDA build only where an NVIDIA GPU exists."""
    if subprocess.call([python, "-c", "import torch"], stderr=subprocess.DEVNULL) == 0:
        return
    pip = [python, "-m", "pip", "install"]
    if _has_nvidia_gpu() or platform.system() != "Linux":
        ok = _run([*pip, "torch>=2.2"]) == 0  # CUDA on NVIDIA machines; CPU/MPS on macOS, Windows
    else:
        # A local CPU wheel where pip's find-links has one (as on CI), else PyTorch's CPU index.
        wheel = _local_cpu_wheel(python)
        ok = (_run([*pip, wheel]) == 0 if wheel
              else _run([*pip, TORCH_CPU, "--index-url", TORCH_CPU_INDEX]) == 0)
    if not ok:
        sys.exit("book.py: could not install torch; install a build for this machine and rerun")


def setup(use_venv: bool) -> str:
    """Make sure the environment has everything; return the path of its python."""
    if use_venv:
        if not _venv_python().exists():
            if _run([sys.executable, "-m", "venv", VENV]) != 0:
                sys.exit("book.py: could not create the virtual environment " + str(VENV))
        python = str(_venv_python())
    else:
        python = sys.executable
    # The stamp lives in the environment it describes and names this checkout: an editable
    # install points at one clone.
    stamp = (VENV if use_venv else Path(sys.prefix)) / ".deepscope-install"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()
                            + str(ROOT).encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    _install_torch(python)
    if _run([python, "-m", "pip", "install", "-e", f"{ROOT}[{EXTRAS}]"]) != 0:
        sys.exit("book.py: pip could not install the book's package; see the error above")
    stamp.write_text(wanted)
    return python


# ---------------------------------------------------------------------------------------------
# Notebooks


def chapter_notebooks() -> list[Path]:
    """Every notebook of the book, in reading order."""
    return sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def notebooks_with_outputs() -> list[str]:
    """Committed notebooks must be stripped: no outputs, no execution counts."""
    bad = []
    for path in chapter_notebooks():
        cells = json.loads(path.read_text()).get("cells", [])
        if any(c.get("outputs") or c.get("execution_count") for c in cells
               if c.get("cell_type") == "code"):
            bad.append(str(path.relative_to(ROOT)))
    return bad


def parallel_env(workers: int) -> dict[str, str]:
    """Environment for ``workers`` parallel torch processes: threads split, not oversubscribed."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = str(max(1, (cores or 1) // workers))
    env = dict(os.environ, DEEPSCOPE_THREADS=threads, OMP_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads, MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.setdefault("DEEPSCOPE_CACHE", str(ROOT / ".cache" / "models"))
    return env


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_lab(args, python: str) -> int:
    if args.site:
        return _run([python, "-m", "tools.build_site", *args.rest], cwd=ROOT,
                    env=parallel_env(2))
    if args.headless:
        return _run([python, "-m", "tools.execute_book", *args.rest], cwd=ROOT,
                    env=parallel_env(2))
    env = dict(os.environ)
    env.setdefault("DEEPSCOPE_CACHE", str(ROOT / ".cache" / "models"))
    cmd, notice = lab_command(python, args.rest)
    if notice:
        print(notice, flush=True)
    return _run(cmd, env=env)


def lab_command(python: str, rest: list[str], euid: int | None = None) -> tuple[list, str | None]:
    """The command that starts JupyterLab on chapters/, and a one-line notice when it needs one.

    As root (a container, a cloud VM image) JupyterLab refuses to start without --allow-root, so
    it is added, and said.
    """
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else -1
    cmd = [python, "-m", "jupyterlab", "--ServerApp.root_dir", ROOT / "chapters", *rest]
    if euid != 0 or "--allow-root" in rest:
        return cmd, None
    return cmd + ["--allow-root"], ("book.py: running as root (a container?), so JupyterLab "
                                    "starts with --allow-root")


def _stages(python: str, workers: int) -> list[tuple[str, list[str] | None]]:
    cov = ["--cov=deepscope", "--cov-append", "--cov-report="]
    pytest = [python, "-m", "pytest", "-p", "no:cacheprovider"]
    xdist = ["-n", str(workers)] if workers > 1 else []
    stages: list[tuple[str, list[str] | None]] = [
        ("lint", [python, "-m", "ruff", "check", "lib", "tests", "benchmarks", "tools",
                  "chapters", "instructor", "book.py"]),
        ("stripped", None),
        ("unit", [*pytest, "tests", "--ignore=tests/browser", "--ignore=tests/grading",
                        *cov, *xdist]),
    ]
    if (ROOT / "tests" / "grading").is_dir():
        stages.append(("grader", [*pytest, "tests/grading", *cov, *xdist]))
    if os.environ.get("DEEPSCOPE_TEST_USER") and (ROOT / "tests/grading/adversarial").is_dir():
        # the adversarial suite again, as the unprivileged user most teachers grade as
        stages.append(("adversarial-user", ["runuser", "-u", os.environ["DEEPSCOPE_TEST_USER"],
                                            "--", *pytest, "tests/grading/adversarial", *xdist]))
    stages.append(("coverage", [python, "-m", "coverage", "report",
                                f"--fail-under={COVERAGE_MIN}"]))
    # Kernels on private IPC sockets (tools.nbval_kernels: parallel starts cannot cross TCP
    # ports and hang); a cell gets 240 s, a few times the slowest cell of the book.
    stages.append(("notebooks", [*pytest, "-p", "tools.nbval_kernels", "--nbval-lax",
                                         "--nbval-current-env", "--nbval-cell-timeout=240",
                                         "chapters", *xdist, "--dist", "loadfile"]))
    # Full-mode smoke test: every notebook's full-size data and models with a handful of
    # iterations (DEEPSCOPE_FULL=smoke), so the full paths cannot rot; asserts are tolerated.
    stages.append(("smoke", [python, "-m", "tools.execute_book", "--smoke", "--workers",
                             str(workers), "--out", str(ROOT / "_build" / "smoke")]))
    if (ROOT / "tests" / "browser").is_dir():
        stages.append(("browser", [*pytest, "tests/browser", "-v"]))
    return stages


def cmd_test(args, python: str) -> int:
    workers = args.workers
    env = parallel_env(workers)
    (ROOT / ".coverage").unlink(missing_ok=True)
    results = []
    for name, cmd in _stages(python, workers):
        if args.only and name not in args.only.split(","):
            continue
        print(f"\n===== {name} =====", flush=True)
        start = time.perf_counter()
        if cmd is None:
            bad = notebooks_with_outputs()
            for path in bad:
                print(f"holds outputs (strip it): {path}")
            code = 1 if bad else 0
            print("all notebooks are stripped" if not bad else "")
        else:
            code = _run(cmd, cwd=ROOT, env=env)
        results.append((name, code, time.perf_counter() - start))
    print("\n===== summary =====")
    for name, code, seconds in results:
        print(f"{name:<12} {'ok' if code == 0 else 'FAILED':<7} {seconds:7.1f} s")
    total = sum(s for *_, s in results)
    print(f"{'total':<12} {'':<7} {total:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-venv", action="store_true",
                        help="use the current interpreter instead of .venv (e.g. conda)")
    sub = parser.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="open JupyterLab on chapters/ (or --headless: run them all; "
                         "--site: build the static book); other options go on to that tool")
    lab.add_argument("--headless", action="store_true",
                     help="execute every chapter without a browser and report the times")
    lab.add_argument("--site", action="store_true",
                     help="execute every chapter and write the book as a static HTML site "
                     "(_build/site/index.html)")
    test = sub.add_parser("test", help="run every check CI runs")
    test.add_argument("--only", help="comma-separated stages to run: lint, stripped, unit, "
                      "grader, adversarial-user, coverage, notebooks, smoke, browser")
    test.add_argument("--workers", type=int, default=2,
                      help="parallel test processes (default 2, the CI machine's cores)")
    # Options lab does not know go on to JupyterLab, the headless runner or the site builder
    # (e.g. `lab --headless 03_ --workers 1`, `lab --port 9999`).
    args, rest = parser.parse_known_args(argv)
    if args.command == "test" and rest:
        parser.error(f"test: unknown arguments {' '.join(rest)}")
    args.rest = [r for r in rest if r != "--"]
    python = setup(use_venv=not args.no_venv)
    return cmd_lab(args, python) if args.command == "lab" else cmd_test(args, python)


if __name__ == "__main__":
    sys.exit(main())
