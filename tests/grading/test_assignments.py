"""Every assignment: the master scores full marks, the student copy scores zero, each mutant
loses points on its question, the committed student copy is the released master, and both
notebooks run (the master without a single error, the student copy failing only in cells
tagged raises-exception, with NotImplementedError)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from deepscope.grading import grade, load_assignment, release_text
from deepscope.grading.runner import ASSIGNMENTS

from .mutants import MUTANTS, mutate

ROOT = Path(__file__).resolve().parents[2]


def _available():
    found = []
    for assignment_id in ASSIGNMENTS:
        try:
            assignment = load_assignment(assignment_id)
        except ImportError:  # the chapter's library has not landed
            continue
        if (ROOT / assignment.master).exists():
            found.append(assignment)
    return found


AVAILABLE = _available()
IDS = [a.id for a in AVAILABLE]


@pytest.fixture(scope="module", params=AVAILABLE, ids=IDS)
def assignment(request):
    return request.param


def test_every_assignment_is_present():
    assert len(AVAILABLE) == len(ASSIGNMENTS), f"only {IDS} have a library and a master"


def test_master_scores_full_marks(assignment):
    report = grade(ROOT / assignment.master, assignment.id)
    assert report.points == report.max_points == assignment.points, report.table()


def test_student_copy_scores_zero(assignment):
    report = grade(ROOT / assignment.student)
    assert report.assignment == assignment.id  # detected from the functions defined
    assert report.points == 0 and report.max_points == assignment.points
    assert all(c.message.startswith("not implemented yet") for q in report.questions
               for c in q.checks), report.table()


def test_committed_student_copy_is_the_released_master(assignment):
    assert (ROOT / assignment.student).read_text() == release_text(ROOT / assignment.master), (
        f"regenerate it: deepscope release {assignment.master} {assignment.student}")


def test_points_stated_in_the_notebook_match_the_checks(assignment):
    text = "\n".join(c.source for c in nbformat.read(ROOT / assignment.student, as_version=4).cells
                     if c.cell_type == "markdown")
    stated = [(int(n), float(p)) for n, p in
              re.findall(r"^## Question (\d+):.*\((\d+(?:\.\d+)?) points?\)", text, re.M)]
    assert stated == [(i, q.points) for i, q in enumerate(assignment.questions, start=1)]
    total = re.search(r"\*\*total\*\* \| \*\*(\d+(?:\.\d+)?)\*\*", text)
    assert total and float(total.group(1)) == assignment.points


CASES = [(a_id, function, name, source) for a_id, by_function in MUTANTS.items()
         for function, mutants in by_function.items() for name, source in mutants
         if a_id in IDS]


def _with_answer(master: Path, function: str, change, out: Path) -> Path:
    nb = nbformat.read(master, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "answer" in c.metadata.get("tags", [])
             and re.search(rf"^def {function}\(", c.source, re.M)]
    assert len(cells) == 1, f"one answer cell must define {function}"
    solution = re.sub(r"\n *### (BEGIN|END) SOLUTION", "", cells[0].source)
    cells[0].source = mutate(solution, change)
    assert cells[0].source != solution
    nbformat.write(nb, out)
    return out


@pytest.mark.parametrize("assignment_id, function, name, source", CASES,
                         ids=[f"{a}-{f}-{n}" for a, f, n, _ in CASES])
def test_mutant_loses_points(assignment_id, function, name, source, tmp_path):
    assignment = load_assignment(assignment_id)
    path = _with_answer(ROOT / assignment.master, function, source, tmp_path / "mutant.ipynb")
    report = grade(path, assignment_id, questions=[function])
    (question,) = report.questions
    assert question.points < question.max_points, f"mutant '{name}' kept every point"


def test_every_question_has_two_mutants():
    for assignment in AVAILABLE:
        for question in assignment.questions:
            assert len(MUTANTS.get(assignment.id, {}).get(question.function, [])) >= 2, (
                f"{assignment.id}.{question.function} needs at least two mutants")


def _execute(path: Path) -> list[tuple[int, list[str], str]]:
    """Run a notebook with nbclient (errors allowed only where tagged); return the errors."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return [(i, c.metadata.get("tags", []), o.ename) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_master_runs_without_any_error(assignment):
    # nbval and nbclient both let a cell tagged raises-exception fail: in a master that would
    # hide a broken try-it cell, so the master must run with no error at all.
    assert _execute(ROOT / assignment.master) == []


@pytest.mark.slow
def test_student_copy_fails_only_in_tagged_cells_with_the_stub_error(assignment):
    errors = _execute(ROOT / assignment.student)
    assert errors, "the student copy should show the stubs' errors"
    assert all("raises-exception" in tags and ename == "NotImplementedError"
               for _, tags, ename in errors), errors


HELPERS = [(a.id, name) for a in AVAILABLE for name in a.substitutes]


@pytest.mark.parametrize("assignment_id, function", HELPERS,
                         ids=[f"{a}-{f}" for a, f in HELPERS])
def test_a_wrong_helper_costs_only_its_own_question(assignment_id, function, tmp_path):
    assignment = load_assignment(assignment_id)
    name, change = MUTANTS[assignment_id][function][0]
    path = _with_answer(ROOT / assignment.master, function, change, tmp_path / "helper.ipynb")
    report = grade(path, assignment_id)
    lost = {q.function for q in report.questions if q.points < q.max_points}
    assert lost == {function}, report.table()
    users = [q for q in report.questions if any(function in w for w in q.warnings)]
    assert users, f"no question is graded with a substitute for {function}"
