"""Side-by-side speed measurements: each benchmark runs ours and a reference in the same process,
interleaved, several repeats, and reports medians and their ratio.

Chapters register benchmarks in ``benchmarks/bench_<topic>.py`` by defining ``benchmarks()``,
which returns a list of `Benchmark` (build models and data inside it, not at import time).
Run them with ``python -m benchmarks [PATTERN ...]``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Benchmark:
    """One comparison: ``ours`` against ``reference``, each a zero-argument callable doing the
    same work. ``target`` is the ratio ours/reference we aim at or below (None: no target)."""

    name: str
    ours: Callable[[], object]
    reference: Callable[[], object]
    reference_name: str = "reference"
    target: float | None = None
    repeats: int = 7
    warmup: int = 1
    sync: Callable[[], None] = field(default=lambda: None)


@dataclass
class Result:
    name: str
    reference_name: str
    ours_s: float
    reference_s: float
    target: float | None

    @property
    def ratio(self) -> float:
        return self.ours_s / self.reference_s

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


def _time(fn, sync, clock=time.perf_counter) -> float:
    sync()
    start = clock()
    fn()
    sync()
    return clock() - start


def measure(bench: Benchmark, repeats: int | None = None, *, cpu_time: bool = False) -> Result:
    """Time ours and the reference interleaved (alternating which goes first); return medians.

    ``cpu_time`` measures this process's CPU time (``time.process_time``) instead of wall time:
    steadier on a shared machine, and equal to wall time for single-threaded CPU work (not for
    GPU work, which the CPU only waits for)."""
    clock = time.process_time if cpu_time else time.perf_counter
    for _ in range(bench.warmup):
        bench.ours()
        bench.reference()
    ours, ref = [], []
    for r in range(repeats or bench.repeats):
        if r % 2 == 0:
            ours.append(_time(bench.ours, bench.sync, clock))
            ref.append(_time(bench.reference, bench.sync, clock))
        else:
            ref.append(_time(bench.reference, bench.sync, clock))
            ours.append(_time(bench.ours, bench.sync, clock))
    return Result(bench.name, bench.reference_name, statistics.median(ours),
                  statistics.median(ref), bench.target)


def format_table(results: list[Result]) -> str:
    """Render results as a fixed-width table: name, reference, medians, ratio, target."""
    header = (f"{'benchmark':<40} {'reference':<22} {'ours ms':>9} {'ref ms':>9} {'ratio':>6}"
              "  target")
    lines = [header, "-" * (len(header) + 10)]
    for r in results:
        target = "" if r.target is None else (
            f"<= {r.target:g} {'ok' if r.meets_target else 'MISSED'}")
        lines.append(f"{r.name:<40} {r.reference_name:<22} {r.ours_s * 1e3:>9.2f} "
                     f"{r.reference_s * 1e3:>9.2f} {r.ratio:>6.2f}  {target}")
    return "\n".join(lines)
