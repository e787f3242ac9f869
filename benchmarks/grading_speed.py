"""Time ``deepscope grade`` on a class of submissions, for two versions of the library, interleaved.

    python -m benchmarks.grading_speed --lib /tmp/base/lib --lib lib --rounds 3

For each round and each assignment, every library version (``--lib``, a folder holding the
``deepscope`` package; the first is the baseline) grades ``--n`` copies of the assignment's master
with ``--jobs`` questions in parallel, in a fresh process (interpreter start and imports
included, as a teacher runs it). Versions alternate within each round, so a change in the
machine's load hits both. Prints every time, the median per version and the ratio to the
baseline, with the load average beside them; also the CPU seconds of the grader and all the
processes it started, which a shared machine's load disturbs far less than wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MASTERS = {
    "01_saliency": "instructor/01_saliency/assignment.ipynb",
    "02_loss_landscapes": "instructor/02_loss_landscapes/assignment.ipynb",
    "03_contrastive_geometry": "instructor/03_contrastive_geometry/assignment.ipynb",
    "04_neural_collapse": "instructor/04_neural_collapse/assignment.ipynb",
    "05_scaling_laws": "instructor/05_scaling_laws/assignment.ipynb",
}


def grade_once(lib: Path, assignment: str, files: list[Path], jobs: int,
               seed: int | None) -> tuple[float, float]:
    """Grade ``files`` with the deepscope found in ``lib``; return (wall seconds, CPU seconds of
    the grader and every process it started)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import deepscope; "
            "assert deepscope.__file__.startswith(sys.argv[1]), deepscope.__file__; "
            "from deepscope.cli import main; sys.exit(main(sys.argv[2:]))")
    args = ["grade", *map(str, files), "--assignment", assignment, "--jobs", str(jobs),
            "--quiet"]
    if seed is not None:
        args += ["--seed", str(seed)]
    env = dict(os.environ, PYTHONPATH=str(lib))
    start = time.perf_counter()
    cpu_before = _children_cpu()
    done = subprocess.run([sys.executable, "-c", code, str(lib), *args], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"grading with {lib} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    full = sum(1 for line in done.stdout.splitlines() if line.split("  ")[0].split(" / ")[0]
               == line.split("  ")[0].split(" / ")[-1])
    if full != len(files):
        raise SystemExit(f"{lib}: only {full} of {len(files)} copies of the master got full "
                         f"marks:\n{done.stdout[-3000:]}")
    return seconds, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", action="append", type=Path, required=True,
                        help="a folder holding the deepscope package (repeat; first: baseline)")
    parser.add_argument("--assignment", action="append", choices=sorted(MASTERS),
                        help="default: 01_saliency and 05_scaling_laws")
    parser.add_argument("--n", type=int, default=30, help="submissions (copies of the master)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed-for", action="append", default=[], type=Path,
                        help="pass --seed 1 to this library version (one that accepts it)")
    args = parser.parse_args(argv)
    libs = [p.resolve() for p in args.lib]
    seeded = {p.resolve() for p in args.seed_for}
    assignments = args.assignment or ["01_saliency", "05_scaling_laws"]
    times: dict[tuple[str, Path], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        folders = {}
        for a in assignments:
            folder = Path(tmp) / a
            folder.mkdir()
            for i in range(args.n):
                shutil.copy(ROOT / MASTERS[a], folder / f"student{i:02d}.ipynb")
            folders[a] = sorted(folder.glob("*.ipynb"))
        for round_ in range(args.rounds):
            for a in assignments:
                order = libs if round_ % 2 == 0 else libs[::-1]
                for lib in order:
                    load = os.getloadavg()[0]
                    s, cpu = grade_once(lib, a, folders[a], args.jobs,
                                        1 if lib in seeded else None)
                    times.setdefault((a, lib), []).append((s, cpu))
                    print(f"round {round_ + 1} {a:<24} {lib}: {s:6.1f} s wall, {cpu:6.1f} s CPU "
                          f"(load {load:.2f})", flush=True)
    print(f"\n{args.n} submissions, --jobs {args.jobs}, median of {args.rounds} rounds "
          f"(load now {os.getloadavg()[0]:.2f}):")
    for a in assignments:
        base = [statistics.median(t[k] for t in times[(a, libs[0])]) for k in (0, 1)]
        for lib in libs:
            wall, cpu = (statistics.median(t[k] for t in times[(a, lib)]) for k in (0, 1))
            print(f"  {a:<24} {str(lib):<32} wall {wall:6.1f} s (ratio {wall / base[0]:.2f})  "
                  f"CPU {cpu:6.1f} s (ratio {cpu / base[1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
