"""Execute every chapter notebook headless with nbclient and report each one's wall time.

    python -m tools.execute_book [PATTERN ...] [--workers 2] [--out _build/executed]

Executed copies (with outputs) go under ``--out``; the committed notebooks stay stripped. Cells
tagged ``raises-exception`` (an assignment's stubs) may raise; any other error fails the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebooks(patterns: list[str]) -> list[Path]:
    """Chapter notebooks in reading order, filtered by substrings of their paths."""
    found = sorted(p for p in (ROOT / "chapters").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    return [p for p in found if not patterns or any(s in str(p) for s in patterns)]


def execute(path: Path, out_dir: Path, timeout: int = 900) -> tuple[str, float, str | None]:
    """Execute one notebook in its own folder; write the executed copy; return (name, s, error)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    error = None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    except Exception as err:  # a dead kernel, a timeout: report, do not hide
        error = f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    target = out_dir / path.relative_to(ROOT / "chapters")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return str(path.relative_to(ROOT)), seconds, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="substrings of notebook paths to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "executed")
    args = parser.parse_args(argv)
    if "DEEPSCOPE_THREADS" not in os.environ:
        # Split the cores between the parallel kernels: oversubscribed torch runs many times slower.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["DEEPSCOPE_THREADS"] = str(max(1, (cores or 1) // args.workers))
    paths = notebooks(args.patterns)
    if not paths:
        print("no notebook matches", args.patterns)
        return 1
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(execute, paths, [args.out] * len(paths)))
    failed = 0
    for name, seconds, error in results:
        print(f"{seconds:7.1f} s  {'ok    ' if error is None else 'FAILED'}  {name}")
        if error:
            failed += 1
            print(f"           {error}")
    print(f"{time.perf_counter() - start:7.1f} s  total wall time, {len(paths)} notebooks, "
          f"{args.workers} workers; executed copies in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
