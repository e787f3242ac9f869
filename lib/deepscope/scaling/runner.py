"""Run a sweep of independent training runs on any executor, resumably.

A sweep is a function ``run(spec, config) -> dict`` (one result row), a ``spec`` shared by all
runs (what to train: the data, the optimiser, the seed) and a list of ``configs`` (what varies:
size, tokens, ...). This is how research codebases structure sweeps (OLMo's ladder, Pythia's
per-size configs): independent run specs, one record per config, a swappable launcher. The
launcher here is any `concurrent.futures.Executor`: None runs serially in this process, and the
standard library's thread and process pools, Dask's ``Client.get_executor()`` (a laptop, a
Kubernetes or a Slurm cluster through dask-jobqueue) or any other implementation of the
interface run them in parallel. ``run`` must be a module-level function and ``spec`` and the
configs picklable when the executor runs tasks in other processes.

With ``results_dir`` each finished run is written at once (atomically: a temporary file, then
`os.replace`) under a key that hashes the run function (its code), the spec, the config and
the library version; a sweep started again skips the runs already on disk, so a preempted or
crashed sweep picks up where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import marshal
import math
import os
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .._checks import check_int

__all__ = ["RunFailure", "SweepError", "run_sweep", "run_key"]

#: Serialises model construction in threads: `torch.manual_seed` and the default initialisers
#: use the process-wide generator, which two threads must not interleave.
INIT_LOCK = threading.Lock()


class RunFailure(NamedTuple):
    """A run that did not return a row: its position, its config and what went wrong."""

    index: int
    config: object
    error: str  # "ExceptionType: message"
    traceback: str


class SweepError(RuntimeError):
    """Some runs of a sweep failed; the others finished (and were saved with ``results_dir``).

    Attributes: ``failures`` (list of `RunFailure`), ``rows`` (one dict per config in config
    order, None where the run failed)."""

    def __init__(self, fn: str, failures: list[RunFailure], rows: list):
        self.failures, self.rows = failures, rows
        lines = [f"  config {f.index} {f.config!r}: {f.error}" for f in failures]
        super().__init__(f"{fn}: {len(failures)} of {len(rows)} runs failed (the others "
                         "finished; rerun with the same results_dir to redo only these):\n"
                         + "\n".join(lines))


def _fingerprint(obj, fn: str):
    """Return a JSON-able description of ``obj`` that changes whenever its value does."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return _fingerprint(obj.item(), fn)
    if isinstance(obj, torch.device):
        return f"device:{obj}"
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        array = obj.detach().cpu().contiguous().numpy() if isinstance(obj, torch.Tensor) else obj
        array = np.ascontiguousarray(array)
        return {"array": str(array.dtype), "shape": list(array.shape),
                "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
    if isinstance(obj, dict):
        return {"dict": sorted((str(k), _fingerprint(v, fn)) for k, v in obj.items())}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__qualname__,
                "fields": {f.name: _fingerprint(getattr(obj, f.name), fn)
                           for f in dataclasses.fields(obj)}}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return {"type": type(obj).__qualname__,
                "fields": {k: _fingerprint(v, fn) for k, v in zip(obj._fields, obj)}}
    if isinstance(obj, (list, tuple)):
        return [_fingerprint(v, fn) for v in obj]
    if hasattr(obj, "func") and hasattr(obj, "args") and hasattr(obj, "keywords"):  # partial
        return {"partial": _fingerprint(obj.func, fn), "args": _fingerprint(obj.args, fn),
                "keywords": _fingerprint(obj.keywords, fn)}
    code = getattr(obj, "__code__", None)
    if code is not None:  # a Python function: its name, its code and what it closes over
        closure = [c.cell_contents for c in (obj.__closure__ or ())]
        return {"function": f"{obj.__module__}.{obj.__qualname__}",
                "code": hashlib.sha256(marshal.dumps(code)).hexdigest(),
                "defaults": _fingerprint(obj.__defaults__, fn),
                "closure": _fingerprint(closure, fn)}
    text = repr(obj)
    if " at 0x" in text:
        raise TypeError(f"{fn}: cannot key `results_dir` on {type(obj).__name__} objects (their "
                        "repr holds a memory address); put plain values, tensors, dataclasses or "
                        "module-level functions in the spec")
    return {"repr": text}


def run_key(run: Callable, spec, config) -> str:
    """Return the hex sha256 that names a run's result file: it covers the run function (its
    qualified name and code), the spec, the config and the version of deepscope."""
    from .. import __version__

    payload = {"run": _fingerprint(run, "run_key"), "spec": _fingerprint(spec, "run_key"),
               "config": _fingerprint(config, "run_key"), "deepscope": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _column(values: list) -> np.ndarray:
    """An array of the values: numeric when they all are, else an object array (never strings
    silently made of numbers)."""
    if all(isinstance(v, (int, float, bool, np.number)) for v in values):
        return np.asarray(values)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _load(path: Path, key: str):
    """Return the row saved at ``path`` for ``key``, or None when it is absent or unreadable."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        warnings.warn(f"run_sweep: ignoring the unreadable result file {path} (the run is "
                      "redone)", RuntimeWarning, stacklevel=3)
        return None
    if not isinstance(record, dict) or record.get("key") != key or "row" not in record:
        return None
    return record["row"]


def _save(directory: Path, key: str, config, row: dict) -> None:
    """Write one run's row atomically (a temporary file in the same folder, then os.replace)."""
    record = {"key": key, "config": repr(config), "row": row}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / f"{key}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _call(run: Callable, spec, config, threads: int | None):
    """Run one config in the worker: cap its threads, time it, and return (True, row) or
    (False, (error, traceback)) so that an exception never has to be pickled."""
    try:
        start = time.perf_counter()
        if threads is None:
            row = run(spec, config)
        else:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with threadpool_limits(limits=threads):
                    row = run(spec, config)
            finally:
                torch.set_num_threads(previous)
        if not isinstance(row, dict):
            raise TypeError(f"run_sweep: `run` must return a dict (one result row), got "
                            f"{type(row).__name__}")
        row = {k: _jsonable(v) for k, v in row.items()}
        row.setdefault("seconds", time.perf_counter() - start)
        return True, row
    except Exception as err:  # reported with its config; the other runs go on
        return False, (f"{type(err).__name__}: {err}", traceback.format_exc())


def run_sweep(
    run: Callable,
    spec,
    configs: Sequence,
    *,
    executor: cf.Executor | None = None,
    results_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    errors: str = "raise",
    progress: bool = True,
    desc: str = "run_sweep",
) -> dict[str, np.ndarray]:
    """Run ``run(spec, config)`` for every config and return the rows as columns, in config order.

    Args:
        run: a module-level function (spec, config) -> dict of numbers (one result row).
        spec: what every run shares (a dataclass such as `MarkovSpec` or `TrainSpec`).
        configs: the runs, e.g. (size, tokens) pairs from `isoflop_configs`.
        executor: None (serial, in this process) or any `concurrent.futures.Executor`:
            ``ThreadPoolExecutor``, ``ProcessPoolExecutor`` (use the "spawn" context with
            torch), Dask's ``Client(...).get_executor()``. It is not shut down here.
        results_dir: a folder for one JSON file per finished run (created if missing); runs
            whose file exists are not run again (resume after a crash or preemption).
        threads: torch and BLAS threads of each run (default: 1 with an executor, unchanged
            serially), so that parallel runs do not oversubscribe the cores.
        errors: ``"raise"`` (`SweepError` after every other run finished) or ``"warn"``
            (return the successful rows only, with a RuntimeWarning naming the failures).
        progress: a tqdm bar over completed runs.

    Returns:
        Dict column -> array (n,) over the successful runs in config order (with ``"warn"``,
        also ``"index"``: each row's position in ``configs``). A ``seconds`` column holds each
        run's wall time unless ``run`` reports its own.
    """
    fn = "run_sweep"
    if not callable(run) or isinstance(run, (list, tuple)):
        raise TypeError(f"{fn}: `run` must be a function (spec, config) -> dict, got "
                        f"{type(run).__name__} (the signature is run_sweep(run, spec, configs); "
                        "for your own model use run_sweep(train_run, TrainSpec(...), configs))")
    configs = list(configs)
    if not configs:
        raise ValueError(f"{fn}: `configs` must hold at least one config, got none")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"{fn}: `executor` must be None or a concurrent.futures.Executor, got "
                        f"{type(executor).__name__}")
    if errors not in ("raise", "warn"):
        raise ValueError(f"{fn}: `errors` must be 'raise' or 'warn', got {errors!r}")
    if threads is not None:
        threads = check_int(threads, "threads", fn)
    elif executor is not None:
        threads = 1
    directory = None
    if results_dir is not None:
        directory = Path(results_dir)
        directory.mkdir(parents=True, exist_ok=True)
    keys = [run_key(run, spec, c) for c in configs] if directory is not None else None
    rows: list = [None] * len(configs)
    if directory is not None:
        for i, key in enumerate(keys):
            rows[i] = _load(directory / f"{key}.json", key)
    pending = [i for i, row in enumerate(rows) if row is None]
    failures: list[RunFailure] = []
    bar = tqdm(total=len(configs), initial=len(configs) - len(pending), desc=desc,
               disable=not progress, leave=False)
    torch_threads = torch.get_num_threads()

    def finish(i, outcome):
        ok, value = outcome
        if ok:
            rows[i] = value
            if directory is not None:
                _save(directory, keys[i], configs[i], value)
        else:
            failures.append(RunFailure(i, configs[i], *value))
        bar.update(1)

    try:
        if executor is None:
            for i in pending:
                finish(i, _call(run, spec, configs[i], threads))
        else:
            futures = {executor.submit(_call, run, spec, configs[i], threads): i for i in pending}
            try:
                for future in cf.as_completed(futures):
                    i = futures[future]
                    try:
                        outcome = future.result()
                    except BaseException as err:  # the worker died (BrokenProcessPool, ...)
                        if isinstance(err, KeyboardInterrupt):
                            raise
                        outcome = (False, (f"{type(err).__name__}: {err}",
                                           traceback.format_exc()))
                    finish(i, outcome)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()
        torch.set_num_threads(torch_threads)
    failures.sort(key=lambda f: f.index)
    if failures and errors == "raise":
        raise SweepError(fn, failures, rows)
    done = [i for i, row in enumerate(rows) if row is not None]
    if failures:
        warnings.warn(str(SweepError(fn, failures, rows)), RuntimeWarning, stacklevel=2)
    columns = {}
    for i in done:
        for k in rows[i]:
            columns.setdefault(k, [])
    out = {k: _column([rows[i].get(k, math.nan) for i in done]) for k in columns}
    if failures:
        out["index"] = np.asarray(done)
    return out
