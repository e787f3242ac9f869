"""nbgrader round trip: ``deepscope release --nbgrader`` -> ``nbgrader generate_assignment`` ->
two submissions -> ``nbgrader autograde`` -> the points our checks give, in nbgrader's gradebook.

nbgrader (PyPI) lives in a virtual environment of its own, made by this test and kept in the
repository's ``.cache/nbgrader-venv`` (about a minute the first time, nothing after): installed
into the book's environment it would add notebook 7 and its Jupyter server extensions beside the
book's JupyterLab. That environment imports this checkout's environment after its own packages
(a ``.pth`` file), so its kernels find torch and deepscope."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
from deepscope import cli
from deepscope.grading import load_assignment

from .mutants import MUTANTS, master_solution, mutate

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "nbgrader-venv"
NBGRADER = "nbgrader>=0.9,<0.10"
ASSIGNMENT = "03_contrastive_geometry"


def nbgrader_venv() -> Path:
    """The cached environment with nbgrader; made (and timed) on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".deepscope-stamp"
    wanted = f"{NBGRADER} {sysconfig.get_paths()['purelib']}"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(VENV, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", NBGRADER],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"could not install {NBGRADER}:\n{done.stderr[-3000:]}"
        site = subprocess.run([str(python), "-c", "import sysconfig; "
                               "print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        Path(site, "deepscope_book.pth").write_text(
            f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
        stamp.write_text(wanted)
        print(f"made {VENV} in {time.perf_counter() - start:.0f} s")
    return VENV


def _answers(release: Path, out: Path, changes: dict[str, object]) -> None:
    """A student's submission: the released notebook with every solution cell answered (by
    the master, or by ``changes[function]``)."""
    assignment = load_assignment(ASSIGNMENT)
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        function = next(q.function for q in assignment.questions
                        if re.search(rf"^def {q.function}\(", cell.source, re.M))
        solution = master_solution(ROOT / assignment.master, function)
        cell.source = mutate(solution, changes[function]) if function in changes else solution
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


@pytest.mark.slow
def test_nbgrader_generate_assignment_and_autograde(tmp_path):
    venv = nbgrader_venv()
    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'deepscope'\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{course / 'gradebook.db'}'\n"
        "c.ExecutePreprocessor.timeout = 600\n")
    assert cli.main(["release", "--nbgrader", str(ROOT / load_assignment(ASSIGNMENT).master),
                     str(course / "source" / "ps1" / "assignment.ipynb")]) == 0
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               JUPYTER_CONFIG_DIR=str(tmp_path / "jc"), JUPYTER_DATA_DIR=str(tmp_path / "jd"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jr"), DEEPSCOPE_THREADS="1",
               OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH="")

    def nbgrader(*args: str) -> str:
        done = subprocess.run([str(venv / "bin" / "nbgrader"), *args], cwd=course, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stderr[-4000:]}"
        return done.stdout + done.stderr

    start = time.perf_counter()
    nbgrader("generate_assignment", "ps1", "--force")
    release = course / "release" / "ps1" / "assignment.ipynb"
    released = nbformat.read(release, as_version=4)
    assert "### BEGIN SOLUTION" not in "".join(c.source for c in released.cells)
    mutant_name, mutant = MUTANTS[ASSIGNMENT]["info_nce"][0]
    _answers(release, course / "submitted" / "alice" / "ps1" / "assignment.ipynb", {})
    _answers(release, course / "submitted" / "bob" / "ps1" / "assignment.ipynb",
             {"info_nce": mutant})
    nbgrader("autograde", "ps1", "--create")
    nbgrader("export", "--to", str(tmp_path / "grades.csv"))
    seconds = time.perf_counter() - start
    rows = {r["student_id"]: r for r in csv.DictReader(open(tmp_path / "grades.csv"))}
    total = load_assignment(ASSIGNMENT).points
    assert float(rows["alice"]["score"]) == float(rows["alice"]["max_score"]) == total
    assert float(rows["bob"]["score"]) < total, f"mutant '{mutant_name}' kept every point"
    graded = nbformat.read(course / "autograded" / "bob" / "ps1" / "assignment.ipynb", 4)
    info_nce = next(c for c in graded.cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "grade-info_nce")
    result = next(o for o in info_nce.outputs if o.output_type == "execute_result")
    assert float(result["data"]["text/plain"]) < 4.0  # partial credit from our checks
    assert not any(o.output_type == "stream" and o.name == "stderr" for o in info_nce.outputs)
    print(f"nbgrader round trip (generate, 2 x autograde, export): {seconds:.0f} s")
