"""tools/calibrate.py reruns a notebook over seeds on the executor it is given (serial or a spawned
process pool; Dask goes through the same `run_sweep`), and resumes from its results folder."""

import nbformat
import pytest

from tools import calibrate


def _notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n"
        "x = 2.0 * int(os.environ['DEEPSCOPE_SEED'])\n"
        "threads = float(os.environ['DEEPSCOPE_THREADS'])")]
    path = tmp_path / "probe.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_calibrate_collects_each_seed_on_the_executor(tmp_path, capsys, executor, monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_THREADS", raising=False)
    path = _notebook(tmp_path)
    argv = [str(path), "--seeds", "0-2", "--vars", "x,threads", "--executor", executor,
            "--workers", "2", "--results", str(tmp_path / "results"), "--timeout", "300"]
    assert calibrate.main(argv) == 0
    out = capsys.readouterr().out
    for seed in (0, 1, 2):
        assert f"seed {seed}:" in out and f"x={2 * seed}" in out
    assert "threads=1" in out  # each kernel is capped at one thread
    assert "x: min 0  max 4  mean 2  (n=3)" in out
    # a second call finds every seed on disk and runs nothing (no kernel starts)
    monkeypatch.setattr(calibrate, "run_once", lambda *a: pytest.fail("a seed was rerun"))
    assert calibrate.main(argv) == 0
    assert "x: min 0  max 4" in capsys.readouterr().out
