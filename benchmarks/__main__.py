"""Run the registered benchmarks: ``python -m benchmarks [PATTERN ...] [--repeats N]``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from . import format_table, measure


def discover():
    """Yield every `Benchmark` from the ``bench_*`` modules of this package."""
    folder = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"{__package__}.{info.name}")
            yield from module.benchmarks()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="deepscope speed comparisons")
    parser.add_argument("patterns", nargs="*", help="substrings of benchmark names to run")
    parser.add_argument("--repeats", type=int, default=None, help="override each repeat count")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds of this process instead of wall time (steadier on "
                             "a shared machine; use with --threads 1)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}")
    results = []
    for bench in discover():
        if args.patterns and not any(p in bench.name for p in args.patterns):
            continue
        result = measure(bench, args.repeats, cpu_time=args.cpu_time)
        results.append(result)
        print(f"  measured {bench.name}: ratio {result.ratio:.2f}", flush=True)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps([
            {"name": r.name, "reference": r.reference_name, "ours_s": r.ours_s,
             "reference_s": r.reference_s, "ratio": r.ratio, "target": r.target}
            for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
