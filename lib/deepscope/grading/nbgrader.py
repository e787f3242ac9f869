"""nbgrader: a master as an nbgrader *source* notebook whose grade cells run our checks.

    deepscope release --nbgrader instructor/01_saliency/assignment.ipynb \\
        course/source/ps1/assignment.ipynb

In an nbgrader course (Jupyter's nbgrader: generate-assignment, the exchange, autograde,
formgrader, feedback) the teacher keeps the *source* version of an assignment; `nbgrader_source`
writes it from a master: every answer cell becomes an nbgrader solution cell (the
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers are nbgrader's own), and after each answer
cell comes one locked, autograded cell per graded function::

    from deepscope.grading.nbgrader import grade_question
    grade_question("01_saliency", "integrated_gradients")

When nbgrader autogrades a submission it restores those cells and runs the notebook; each one
calls `grade_question`, which grades that function with ``deepscope grade``'s checks, in the
sandbox, from the code the kernel has run so far (IPython's input history, magics included),
prints the question's table and ends with the points earned: nbgrader records a grade cell's
numeric result as its partial credit. nbgrader runs students' code in the grading kernel itself,
unsandboxed, so a hostile notebook can tamper with that kernel before the grade cell runs; for
classes you do not trust, grade the collected notebooks with ``deepscope grade`` as well.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

from .notebook import (
    ANSWER_TAG,
    Cell,
    NotebookError,
    _analyse,
    clean,
    python_source,
    strip_solutions,
)

SCHEMA_VERSION = 3


def _grade_source(assignment_id: str, function: str, number: int, points: float) -> str:
    return (f"# Question {number}, {function} ({points:g} points): graded by deepscope's checks. "
            "Do not edit this cell.\n"
            "from deepscope.grading.nbgrader import grade_question\n\n"
            f"grade_question({assignment_id!r}, {function!r})")


def nbgrader_source(master, assignment):
    """Return the nbgrader source version of a master (an ``nbformat`` notebook, not modified).

    Raises `NotebookError` when a question's function is defined by no answer cell."""
    import nbformat

    nb = clean(nbformat.from_dict(master))
    nb.metadata["deepscope"] = {"assignment": assignment.id}
    cells = []
    placed = set()
    numbered = {q.function: (n, q) for n, q in enumerate(assignment.questions, start=1)}
    for index, cell in enumerate(nb.cells):
        cells.append(cell)
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "markdown" and strip_solutions(cell.source, "markdown",
                                                           f"cell {index + 1}")[1]:
            raise NotebookError(f"cell {index + 1}: written answers (markdown solutions) have no "
                                "nbgrader mapping here; grade them by hand")
        if cell.cell_type != "code" or ANSWER_TAG not in tags:
            continue
        defines = _analyse(Cell(index + 1, python_source(cell.source))).defines
        defined = sorted(defines & set(numbered), key=lambda f: numbered[f][0])
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                     "grade_id": "answer-" + "-".join(defined or [str(index)]),
                                     "schema_version": SCHEMA_VERSION}
        for function in defined:
            number, question = numbered[function]
            test = nbformat.v4.new_code_cell(_grade_source(assignment.id, function, number,
                                                           question.points))
            test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                         "points": question.points, "grade_id": f"grade-{function}",
                                         "schema_version": SCHEMA_VERSION}
            cells.append(test)
            placed.add(function)
    missing = [q.function for q in assignment.questions if q.function not in placed]
    if missing:
        raise NotebookError(f"no answer cell of the master defines {', '.join(missing)}")
    nb.cells = cells
    nbformat.validate(nb)
    return nb


def write_nbgrader_source(master_path: str | Path, out: str | Path, assignment) -> Path:
    """Write the nbgrader source version of the master at ``master_path``; return its path."""
    import nbformat

    master = nbformat.read(Path(master_path), as_version=4)
    nb = nbgrader_source(master, assignment)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def _history() -> list[str]:
    """The cells the running IPython kernel has executed, as typed (magics included)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("grade_question runs inside a Jupyter kernel (nbgrader autograde, or "
                           "your own notebook); elsewhere use `deepscope grade`")
    raw = list(shell.history_manager.input_hist_raw)
    return [source for source in raw[1:] if source.strip()]


def grade_question(assignment_id: str, function: str, *, seed: int | None = None,
                   time_limit: float | None = None) -> float:
    """Grade one question from the code this kernel has run; print its table; return its
    points (the value nbgrader reads as the grade cell's partial credit).

    The code cells run so far are written to a temporary notebook and graded exactly as
    ``deepscope grade --question FUNCTION`` grades a file (the sandbox, drawn cases, rules).
    Nothing is written to stderr: nbgrader gives no credit to a cell that writes there."""
    from .runner import grade

    sources = _history()
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
         "execution_count": None} for source in sources]}
    with tempfile.TemporaryDirectory(prefix="deepscope-nbgrader-") as tmp, \
            contextlib.redirect_stderr(sys.stdout), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "submission.ipynb"
        path.write_text(json.dumps(nb))
        report = grade(path, assignment_id, questions=[function], seed=seed,
                       time_limit=time_limit)
    report.submission = "this notebook"
    report.warnings = [w for w in report.warnings if "no cell is tagged" not in w]
    print(report.table())
    return float(report.points)
