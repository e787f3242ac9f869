"""The sweep runner: any concurrent.futures executor (serial, threads, spawned processes, Dask),
identical rows in config order, failures reported with their config, resumable results."""

import concurrent.futures as cf
import json
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from deepscope import scaling

from tests import sweep_runs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [(2, 1024), (4, 1024), (8, 2048)]


@pytest.fixture(scope="module")
def chain():
    return scaling.markov_chain(16, sharpness=2.0, decay=1.0, seed=0)


def _sweep(chain, **kwargs):
    return scaling.markov_sweep(chain, CONFIGS, batch_size=128, seed=3, progress=False, **kwargs)


@pytest.mark.slow
def test_rows_are_identical_on_every_executor(chain):
    serial = _sweep(chain, threads=1)
    assert set(serial) == {"size", "N", "N_embedding", "D", "C", "loss", "seconds"}
    np.testing.assert_array_equal(serial["size"], [2, 4, 8])
    results = {}
    with cf.ThreadPoolExecutor(max_workers=3) as ex:
        results["threads"] = _sweep(chain, executor=ex)
    spawn = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=spawn) as ex:
        results["processes"] = _sweep(chain, executor=ex)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        pytest.skip("the Dask case needs `distributed` (pip install deepscope[dask]); the serial, "
                    "thread and process cases passed")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        results["dask"] = _sweep(chain, executor=client.get_executor())
    for name, rows in results.items():
        for column in serial:
            if column != "seconds":  # wall time differs; everything measured is identical
                np.testing.assert_array_equal(rows[column], serial[column], err_msg=name)


def test_threads_are_capped_per_run_and_restored():
    before = torch.get_num_threads()
    rows = scaling.run_sweep(_threads_seen, {}, [0, 1], threads=1, progress=False)
    assert list(rows["threads"]) == [1, 1]
    assert torch.get_num_threads() == before


def _threads_seen(spec, config):
    return {"threads": torch.get_num_threads()}


def test_a_failing_run_is_reported_with_its_config_and_the_others_finish(tmp_path):
    spec = sweep_runs.armed(tmp_path, "raise", at=3)
    with pytest.raises(scaling.SweepError, match=r"1 of 5 runs failed[\s\S]*config 3 3: "
                                                 r"RuntimeError: run 3 failed on purpose") as err:
        scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3, 4], results_dir=tmp_path / "r",
                          progress=False)
    failure = err.value.failures[0]
    assert failure.index == 3 and failure.config == 3 and "Traceback" in failure.traceback
    assert [r["value"] for r in err.value.rows if r] == [0, 1, 4, 16]
    assert sweep_runs.calls(spec["log"]) == [0, 1, 2, 3, 4]
    assert len(list((tmp_path / "r").glob("*.json"))) == 4
    # resume: only the failed run is redone, and now it succeeds
    rows = scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3, 4], results_dir=tmp_path / "r",
                             progress=False)
    assert list(rows["value"]) == [0, 1, 4, 9, 16]
    assert sweep_runs.calls(spec["log"]) == [0, 1, 2, 3, 4, 3]
    # a finished sweep is not run again at all
    scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3, 4], results_dir=tmp_path / "r",
                      progress=False)
    assert len(sweep_runs.calls(spec["log"])) == 6


def test_errors_warn_returns_the_finished_rows(tmp_path):
    spec = sweep_runs.armed(tmp_path, "raise", at=1)
    with pytest.warns(RuntimeWarning, match="config 1 1: RuntimeError"):
        rows = scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2], errors="warn",
                                 progress=False)
    assert list(rows["index"]) == [0, 2] and list(rows["value"]) == [0, 4]


def test_resume_after_the_process_dies_midway(tmp_path):
    # A serial sweep whose third run kills the interpreter (as a preemption or an OOM kill
    # would): the two finished runs are on disk, atomically; the resumed sweep runs the rest.
    spec, results = sweep_runs.armed(tmp_path, "exit", at=2), tmp_path / "results"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from deepscope import scaling
        from tests import sweep_runs
        scaling.run_sweep(sweep_runs.square, {spec!r}, [0, 1, 2, 3], results_dir={str(results)!r},
                          progress=False)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 3, done.stderr
    assert sweep_runs.calls(spec["log"]) == [0, 1, 2]
    saved = sorted(results.glob("*.json"))
    assert len(saved) == 2 and not list(results.glob(".*.tmp"))
    assert {json.loads(p.read_text())["row"]["config"] for p in saved} == {0, 1}
    rows = scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3], results_dir=results,
                             progress=False)
    assert list(rows["value"]) == [0, 1, 4, 9]
    assert sweep_runs.calls(spec["log"]) == [0, 1, 2, 2, 3]  # 0 and 1 were not redone


@pytest.mark.slow
def test_resume_after_a_worker_process_dies(tmp_path):
    # A process-pool worker exits: its run and those still queued fail with the pool; the
    # finished runs are saved; rerunning with the same results_dir completes the sweep.
    spec, results = sweep_runs.armed(tmp_path, "exit", at=2), tmp_path / "r"
    spawn = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as ex:
        with pytest.raises(scaling.SweepError, match="BrokenProcessPool") as err:
            scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3], executor=ex,
                              results_dir=results, progress=False)
    assert [r["config"] for r in err.value.rows if r] == [0, 1]
    assert {f.config for f in err.value.failures} == {2, 3}
    rows = scaling.run_sweep(sweep_runs.square, spec, [0, 1, 2, 3], results_dir=results,
                             progress=False)
    assert list(rows["value"]) == [0, 1, 4, 9]
    assert sweep_runs.calls(spec["log"]) == [0, 1, 2, 2, 3]


def test_keys_cover_the_run_the_spec_the_config_and_the_version(tmp_path, monkeypatch):
    spec = {"a": 1.0, "t": torch.arange(3.0)}
    key = scaling.run_key(sweep_runs.square, spec, (4, 1024))
    assert key == scaling.run_key(sweep_runs.square, {"a": 1.0, "t": torch.arange(3.0)},
                                  (4, 1024))
    assert key != scaling.run_key(sweep_runs.square, spec, (4, 2048))
    assert key != scaling.run_key(sweep_runs.square, {"a": 1.0, "t": torch.arange(1.0, 4.0)},
                                  (4, 1024))
    assert key != scaling.run_key(sweep_runs.calls, spec, (4, 1024))
    import deepscope
    monkeypatch.setattr(deepscope, "__version__", "0.0.0-other")
    assert key != scaling.run_key(sweep_runs.square, spec, (4, 1024))
    with pytest.raises(TypeError, match="cannot key `results_dir` on object objects"):
        scaling.run_key(sweep_runs.square, {"x": object()}, 1)


def test_a_corrupt_result_file_is_redone(tmp_path):
    spec = {"log": str(tmp_path / "calls.txt")}
    scaling.run_sweep(sweep_runs.square, spec, [5], results_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{ not json")
    with pytest.warns(RuntimeWarning, match="ignoring the unreadable result file"):
        rows = scaling.run_sweep(sweep_runs.square, spec, [5], results_dir=tmp_path,
                                 progress=False)
    assert list(rows["value"]) == [25] and sweep_runs.calls(spec["log"]) == [5, 5]


def test_run_sweep_bad_input():
    with pytest.raises(TypeError, match=r"`run` must be a function \(spec, config\) -> dict, "
                                        r"got list \(the signature is run_sweep\(run, spec"):
        scaling.run_sweep([(1, 10)], None, None)
    with pytest.raises(ValueError, match="run_sweep: `configs` must hold at least one config"):
        scaling.run_sweep(sweep_runs.square, {}, [])
    with pytest.raises(TypeError, match="`executor` must be None or a concurrent.futures.Executor"):
        scaling.run_sweep(sweep_runs.square, {}, [1], executor="dask")
    with pytest.raises(ValueError, match="`errors` must be 'raise' or 'warn', got 'ignore'"):
        scaling.run_sweep(sweep_runs.square, {}, [1], errors="ignore")
    with pytest.raises(scaling.SweepError, match="TypeError: run_sweep: `run` must return a dict"):
        scaling.run_sweep(lambda spec, config: 3.0, {}, [1], progress=False)
