"""Calibrate a notebook's asserts: execute it under several seeds, collect chosen variables.

    python -m tools.calibrate chapters/01_saliency/01_02_integrated_gradients.ipynb \
        --seeds 0-4 --vars completeness_gap,pointing_acc [--full] \
        [--executor serial|processes|dask|tcp://scheduler:8786] [--workers 2] [--results DIR]

Each run sets ``DEEPSCOPE_SEED`` (which replaces the seed the notebook gives `setup_notebook`),
executes every cell with errors allowed, then reads the named variables from the kernel. It
prints, per seed, the wall time, which cells failed (a failing assert shows which claim did not
hold) and the values; then min/max/mean per variable: the spread to report and to set thresholds
with a margin.

The seeds are independent runs, scheduled by `deepscope.scaling.run_sweep` on the executor
``--executor`` names: ``serial`` (default, one after the other), ``processes`` (a local pool of
``--workers`` spawned processes), ``dask`` (a local Dask cluster of ``--workers`` single-thread
workers) or the address of a running Dask scheduler (``tcp://host:8786``; its workers need this
repository and the book's environment, i.e. ``pip install -e .[dev,dask]``). Each run's
notebook kernel gets ``DEEPSCOPE_THREADS=1`` unless the variable is already set, so parallel
seeds do not oversubscribe the cores. ``--results DIR`` keeps each finished seed on disk so an
interrupted calibration resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def seeds_from(spec: str) -> list[int]:
    """Parse ``"0-4"`` or ``"0,3,7"`` into a list of ints."""
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def run_once(path: Path, seed: int, names: list[str], full: bool, timeout: int | None):
    import nbformat
    from nbclient import NotebookClient

    from tools.kernels import PrivateKernelManager, default_cell_timeout

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
    env = dict(os.environ, DEEPSCOPE_SEED=str(seed))
    if full:
        env["DEEPSCOPE_FULL"] = "1"
    start = time.perf_counter()
    # A private kernel (IPC sockets in its own folder, sliced polls: tools.kernels), so seeds
    # run in parallel cannot cross ports or stall; the environment goes to the kernel only.
    client = NotebookClient(nb, timeout=timeout or default_cell_timeout(full),
                            kernel_name="python3", allow_errors=True,
                            kernel_manager_class=PrivateKernelManager,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # the manager kills the kernel's session at shutdown
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


def calibrate_seed(spec: dict, seed: int) -> dict:
    """Run the notebook once under ``seed`` (the unit of work `run_sweep` schedules; a
    module-level function so that process pools and Dask workers can run it)."""
    before = os.environ.get("DEEPSCOPE_THREADS")
    os.environ.setdefault("DEEPSCOPE_THREADS", str(spec.get("threads", 1)))
    try:
        seconds, failed, values = run_once(Path(spec["notebook"]), seed, spec["names"],
                                           spec["full"], spec["timeout"])
    finally:
        if before is None:
            os.environ.pop("DEEPSCOPE_THREADS", None)
    return {"seed": seed, "wall": seconds, "failed": json.dumps(failed),
            "values": json.dumps(values)}


@contextlib.contextmanager
def executor_from(choice: str, workers: int):
    """Yield the `concurrent.futures.Executor` that ``--executor`` names (None for serial)."""
    if choice == "serial":
        yield None
    elif choice == "processes":
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            yield ex
    else:
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:
            raise SystemExit(f"--executor {choice} needs Dask: pip install -e .[dask]") from err
        with contextlib.ExitStack() as stack:
            if choice == "dask":
                cluster = stack.enter_context(LocalCluster(
                    n_workers=workers, threads_per_worker=1, dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(choice))
            yield client.get_executor()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--vars", default="", help="comma-separated variable names to collect")
    parser.add_argument("--full", action="store_true", help="set DEEPSCOPE_FULL=1")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds per cell (default 240; 3600 with --full)")
    parser.add_argument("--executor", default="serial",
                        help="serial, processes, dask (local cluster) or a Dask scheduler address")
    parser.add_argument("--workers", type=int, default=2, help="workers of processes/dask")
    parser.add_argument("--results", type=Path, default=None,
                        help="keep finished seeds here and skip them when run again")
    args = parser.parse_args(argv)
    from deepscope.scaling import run_sweep

    names = [n for n in args.vars.split(",") if n]
    spec = {"notebook": str(args.notebook.resolve()), "names": names, "full": args.full,
            "timeout": args.timeout, "threads": 1,  # the notebook's bytes key saved results
            "sha256": hashlib.sha256(args.notebook.read_bytes()).hexdigest()}
    seeds = seeds_from(args.seeds)
    with executor_from(args.executor, args.workers) as executor:
        rows = run_sweep(calibrate_seed, spec, seeds, executor=executor, results_dir=args.results,
                         errors="warn", desc="calibrate")
    table = {n: [] for n in names}
    for seed, seconds, failed, values in zip(rows["seed"], rows["wall"], rows["failed"],
                                             rows["values"]):
        failed, values = json.loads(failed), json.loads(values)
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
