"""Calibrate a notebook's asserts: execute it under several seeds, collect chosen variables.

    python -m tools.calibrate chapters/01_saliency/01_02_integrated_gradients.ipynb \
        --seeds 0-4 --vars completeness_gap,pointing_acc [--full]

Each run sets ``DEEPSCOPE_SEED`` (which replaces the seed the notebook gives `setup_notebook`),
executes every cell with errors allowed, then reads the named variables from the kernel. It
prints, per seed, the wall time, which cells failed (a failing assert shows which claim did not
hold) and the values; then min/max/mean per variable: the spread to report and to set thresholds
with a margin.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def seeds_from(spec: str) -> list[int]:
    """Parse ``"0-4"`` or ``"0,3,7"`` into a list of ints."""
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def run_once(path: Path, seed: int, names: list[str], full: bool, timeout: int):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    probe = "\n".join([
        "import json as _j",
        "_v = {}",
        f"for _n in {names!r}:",
        "    try:",
        "        _v[_n] = float(globals()[_n])",
        "    except Exception as _e:",
        "        _v[_n] = repr(_e)",
        "print('CALIBRATE' + _j.dumps(_v))",
    ])
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    env_before = dict(os.environ)
    os.environ["DEEPSCOPE_SEED"] = str(seed)
    if full:
        os.environ["DEEPSCOPE_FULL"] = "1"
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    seconds = time.perf_counter() - start
    failed, values = [], {}
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                failed.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}"[:200])
            text = out.get("text", "")
            if "CALIBRATE" in text:
                values = json.loads(text.split("CALIBRATE", 1)[1].strip())
    return seconds, failed, values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--vars", default="", help="comma-separated variable names to collect")
    parser.add_argument("--full", action="store_true", help="set DEEPSCOPE_FULL=1")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args(argv)
    names = [n for n in args.vars.split(",") if n]
    table = {n: [] for n in names}
    for seed in seeds_from(args.seeds):
        seconds, failed, values = run_once(args.notebook, seed, names, args.full, args.timeout)
        print(f"seed {seed}: {seconds:6.1f} s  {'ok' if not failed else 'FAILED'}  "
              + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items()), flush=True)
        for line in failed:
            print("    " + line)
        for n in names:
            if isinstance(values.get(n), float):
                table[n].append(values[n])
    for n, vals in table.items():
        if vals:
            print(f"{n}: min {min(vals):.4g}  max {max(vals):.4g}  mean {statistics.mean(vals):.4g}"
                  f"  (n={len(vals)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
