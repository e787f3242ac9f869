"""Execute every chapter notebook headless with nbclient and report each one's wall time.

    python -m tools.execute_book [PATTERN ...] [--workers 2] [--out _build/executed]
                                 [--cell-timeout S] [--smoke]

Executed copies (with outputs) go under ``--out``; the committed notebooks stay stripped. Cells
tagged ``raises-exception`` (an assignment's stubs) may raise; any other error fails the run.

Never hangs: the notebooks run concurrently in this one process (asyncio, up to ``--workers``
kernels at a time; no pool of worker processes to orphan), each kernel on private IPC sockets
(`tools.kernels`: two kernels started at the same moment cannot cross ports), every cell under
a timeout (240 s in quick mode) whose failure names the notebook and the cell. Ctrl-C, SIGTERM
(an outer ``timeout``) and SIGHUP shut every kernel down before the runner exits.

``--smoke`` is CI's full-mode smoke test: ``DEEPSCOPE_FULL=smoke`` (full-size data and models,
a handful of iterations per loop), where the science asserts are not expected to hold: an
``AssertionError`` is reported but tolerated, any other error fails the notebook.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebooks(patterns: list[str]) -> list[Path]:
    """Chapter notebooks in reading order, filtered by substrings of their paths; a pattern that
    is the path of an existing ``.ipynb`` file is taken as is (after the chapters' matches)."""
    is_file = [p.endswith(".ipynb") and Path(p).is_file() for p in patterns]
    files = [Path(p).resolve() for p, f in zip(patterns, is_file) if f]
    substrings = [p for p, f in zip(patterns, is_file) if not f]
    found = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    chosen = [p for p in found if not patterns or any(s in str(p) for s in substrings)]
    return chosen + [f for f in files if f not in chosen]


@dataclass
class Result:
    """What running one notebook gave: its path (relative to the root), seconds, the error
    that stopped it (None when it ran to the end) and, in smoke mode, tolerated asserts."""

    name: str
    seconds: float
    error: str | None
    tolerated: list[str]
    longest_pause: float = 0.0  # seconds between a cell's reply and the next cell's start

    def __iter__(self):  # (name, seconds, error), as callers unpacked it before
        return iter((self.name, self.seconds, self.error))


def longest_pause(nb) -> float:
    """The longest wait between one cell's reply and the next cell's start (nbclient's
    timings; kernel clocks): a healthy run stays well under a second."""
    from datetime import datetime

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    longest, previous = 0.0, None
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.status.busy" in timing and "shell.execute_reply" in timing:
            if previous is not None:
                longest = max(longest, (when(timing["iopub.status.busy"]) - previous)
                              .total_seconds())
            previous = when(timing["shell.execute_reply"])
    return longest


def _error_outputs(nb) -> list[tuple[int, str, str]]:
    """(cell index, exception name, message) of every error output, except in cells tagged
    ``raises-exception`` (an assignment's stubs raise by design)."""
    return [(i, out.get("ename", ""), out.get("evalue", ""))
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and "raises-exception" not in cell.get("metadata", {}).get("tags", [])
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


async def execute_async(path: Path, out_dir: Path, *, timeout: float | None = None,
                        smoke: bool = False, env: dict | None = None) -> Result:
    """Execute one notebook in its own folder on a private kernel; write the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    from tools.kernels import PrivateKernelManager, default_cell_timeout, describe_error

    timeout = default_cell_timeout() if timeout is None else timeout
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ if env is None else env)
    if smoke:
        env["DEEPSCOPE_FULL"] = "smoke"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            kernel_manager_class=PrivateKernelManager, allow_errors=smoke,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error, tolerated = None, []
    try:
        await client.async_execute(env=env)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # a failing cell, a timeout, a dead kernel: report, do not hide
        error = describe_error(path, nb, err, timeout)
    if smoke and error is None:
        for index, ename, evalue in _error_outputs(nb):
            line = f"{path.name}, cell {index}: {ename}: {evalue}"[:300]
            if ename == "AssertionError":
                tolerated.append(line)
            elif error is None:
                error = line
    seconds = time.perf_counter() - start
    chapters = ROOT / "chapters"
    target = out_dir / (path.relative_to(chapters) if path.is_relative_to(chapters) else path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return Result(name, seconds, error, tolerated, longest_pause(nb))


def execute(path: Path, out_dir: Path, timeout: float | None = None,
            smoke: bool = False) -> Result:
    """Execute one notebook (synchronous wrapper of `execute_async`)."""
    return asyncio.run(execute_async(path, out_dir, timeout=timeout, smoke=smoke))


def run(paths: list[Path], out_dir: Path, *, workers: int = 2, timeout: float | None = None,
        smoke: bool = False, env: dict | None = None, on_done=None) -> list[Result]:
    """Execute ``paths`` with at most ``workers`` kernels at a time; results in input order.

    Each notebook runs in a thread of this process with its own event loop (nbclient's own
    signal handling is per event loop and only in the main thread, so it stays out of the way);
    ``on_done(result)`` is called as each one finishes. Ctrl-C, SIGTERM and SIGHUP stop the run:
    notebooks not started yet are dropped, every running kernel's session is killed (the
    notebook fails with "the kernel died"), and ``KeyboardInterrupt`` is raised once every
    thread has returned.
    """
    import signal
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tools.kernels import kill_kernels

    def one(path):
        result = asyncio.run(execute_async(path, out_dir, timeout=timeout, smoke=smoke, env=env))
        if on_done is not None:
            on_done(result)
        return result

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    main = threading.current_thread() is threading.main_thread()
    saved = ({sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
             if main else {})
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="notebook")
    futures = []
    try:
        futures = [pool.submit(one, p) for p in paths]
        return [f.result() for f in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        kill_kernels()  # the running notebooks see their kernels die and return
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        kill_kernels()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def thread_env(workers: int) -> dict:
    """The kernels' environment: torch/BLAS threads split between parallel kernels (an
    oversubscribed 2-core machine runs torch many times slower) unless DEEPSCOPE_THREADS is set."""
    env = dict(os.environ)
    if "DEEPSCOPE_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = str(max(1, (cores or 1) // max(1, workers)))
        env.update(DEEPSCOPE_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def _report(results: list[Result], smoke: bool) -> int:
    print(f"\nin reading order ({'full-mode smoke test' if smoke else 'executed'}):")
    failed = 0
    for r in results:
        print(f"{r.seconds:7.1f} s  {'ok    ' if r.error is None else 'FAILED'}  {r.name}")
        if r.error:
            failed += 1
            print(f"           {r.error}")
        for line in r.tolerated:
            print(f"           tolerated in the smoke test: {line}")
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="substrings of notebook paths to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "executed")
    parser.add_argument("--cell-timeout", type=float, default=None,
                        help="seconds one cell may run (default 240; 3600 with DEEPSCOPE_FULL=1)")
    parser.add_argument("--smoke", action="store_true",
                        help="full-mode smoke test: DEEPSCOPE_FULL=smoke, asserts tolerated")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the same notebooks N times in a row (a stress test: a hang "
                        "shows as a cell timeout)")
    args = parser.parse_args(argv)
    paths = notebooks(args.patterns)
    if not paths:
        print("no notebook matches", args.patterns)
        return 1

    def progress(r: Result) -> None:
        print(f"{r.seconds:7.1f} s  {'ok    ' if r.error is None else 'FAILED'}  {r.name}",
              flush=True)

    start = time.perf_counter()
    bad_runs, timeouts, pause = 0, 0, 0.0
    for attempt in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"\n--- run {attempt} of {args.repeat}", flush=True)
        begun = time.perf_counter()
        try:
            results = run(paths, args.out, workers=args.workers, timeout=args.cell_timeout,
                          smoke=args.smoke, env=thread_env(args.workers), on_done=progress)
        except KeyboardInterrupt as why:
            print(f"interrupted ({why or 'Ctrl-C'}) after {time.perf_counter() - start:.1f} s: "
                  "every kernel was shut down", file=sys.stderr)
            return 130
        failed = _report(results, args.smoke)
        bad_runs += failed > 0
        timeouts += sum("no result after" in (r.error or "") for r in results)
        pause = max([pause, *(r.longest_pause for r in results)])
        print(f"{time.perf_counter() - begun:7.1f} s  total wall time, {len(paths)} notebooks, "
              f"{args.workers} workers; executed copies in {args.out}", flush=True)
    if args.repeat > 1:
        print(f"\n{args.repeat} runs in {time.perf_counter() - start:.0f} s: {bad_runs} with a "
              f"failure, {timeouts} cell timeouts (hangs); longest pause between two cells "
              f"{pause:.2f} s")
    return 1 if bad_runs else 0


if __name__ == "__main__":
    sys.exit(main())
