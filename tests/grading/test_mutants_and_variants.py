"""Issue 16's self-tests: new mutants of every kind lose points, correct-but-different answers
score full marks, and so does a solution written in a new, untagged cell below the stub.

Grading draws cases from a seed; these tests fix it (``SEED``), so a run is repeatable. How
often each mutant is caught over many seeds is measured by ``python -m tools.calibrate_grader
--mutants``."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from deepscope.grading import grade, load_assignment
from deepscope.grading.runner import ASSIGNMENTS, _build_checks

from .mutants import (
    KINDS,
    LOOKUP,
    LOOKUP_HELPERS,
    NEW_MUTANTS,
    lookup_mutant,
    master_solution,
    with_answers,
)
from .variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
SEED = 16  # the grading seed of these tests


def published_fingerprints(assignment, function: str) -> set[str]:
    """Fingerprints of the calls a question makes whatever the grading seed: its published
    cases (found as the calls two different seeds share)."""
    namespace: dict = {}
    exec(compile(assignment.preamble + LOOKUP_HELPERS, "<lookup>", "exec"), namespace)  # noqa: S102
    question = assignment.question(function)

    def prints(seed):
        return {namespace["_fingerprint"](copy.deepcopy(call.args), copy.deepcopy(call.kwargs))
                for calls, _ in _build_checks(question, "cpu", seed) for call in calls}

    return prints(1) & prints(2)


CASES = [(a, f, kind, name, change) for a, by_function in NEW_MUTANTS.items()
         for f, mutants in by_function.items() for kind, name, change in mutants]


@pytest.mark.parametrize("assignment_id, function, kind, name, change", CASES,
                         ids=[f"{a}-{f}-{n}" for a, f, _, n, _ in CASES])
def test_new_mutant_loses_points(assignment_id, function, kind, name, change, tmp_path):
    assignment = load_assignment(assignment_id)
    master = ROOT / assignment.master
    if change == LOOKUP:
        published = published_fingerprints(assignment, function)
        assert published, f"{function} has no published case"
        change = lookup_mutant(master_solution(master, function), function, published)
    path = with_answers(master, {function: change}, tmp_path / "mutant.ipynb")
    report = grade(path, assignment_id, questions=[function], seed=SEED)
    (question,) = report.questions
    assert question.points < question.max_points, f"mutant '{name}' kept every point"
    failed = [c.name for c in question.checks if not c.passed]
    if kind == "rules":  # caught by the check that observes the rules, and only by it
        assert any("rules" in c for c in failed), (failed, report.table())
    if kind == LOOKUP:  # right on the published cases, wrong on the drawn ones
        assert not question.problem, report.table()


def test_every_question_has_three_new_mutants_of_the_issue_kinds():
    for assignment_id in ASSIGNMENTS:
        for question in load_assignment(assignment_id).questions:
            mutants = NEW_MUTANTS[assignment_id].get(question.function, [])
            assert len(mutants) >= 3, f"{assignment_id}.{question.function}"
            assert {kind for kind, _, _ in mutants} <= set(KINDS)
            assert any(kind == LOOKUP for kind, _, _ in mutants)


VARIANT_CASES = [(a, kind, name, changes) for a, variants in VARIANTS.items()
                 for kind, name, changes in variants]


@pytest.mark.parametrize("assignment_id, kind, name, changes", VARIANT_CASES,
                         ids=[f"{a}-{n}" for a, _, n, _ in VARIANT_CASES])
def test_correct_but_different_answer_scores_full_marks(assignment_id, kind, name, changes,
                                                       tmp_path):
    assignment = load_assignment(assignment_id)
    path = with_answers(ROOT / assignment.master, changes, tmp_path / "variant.ipynb")
    report = grade(path, assignment_id, questions=list(changes), seed=SEED)
    assert report.points == report.max_points > 0, report.table()


@pytest.mark.parametrize("assignment_id", list(ASSIGNMENTS))
def test_a_solution_in_a_new_untagged_cell_is_found(assignment_id, tmp_path):
    """The student copy, its stubs untouched, with every solution pasted into a new cell below
    its stub: full marks, and the report says where each function was found."""
    assignment = load_assignment(assignment_id)
    student = nbformat.read(ROOT / assignment.student, as_version=4)
    cells = []
    for cell in student.cells:
        cells.append(cell)
        if cell.cell_type == "code" and "answer" in cell.metadata.get("tags", []):
            for q in assignment.questions:
                if f"def {q.function}(" in cell.source:
                    solution = master_solution(ROOT / assignment.master, q.function)
                    cells.append(nbformat.v4.new_code_cell(solution))
    student.cells = cells
    path = tmp_path / "extra_cells.ipynb"
    nbformat.write(student, path)
    report = grade(path, assignment_id, seed=SEED)
    assert report.points == report.max_points, report.table()
    for q in report.questions:
        assert any("not tagged 'answer'" in w for w in q.warnings), q.warnings


def test_variants_cover_the_issue_kinds():
    kinds = {kind for variants in VARIANTS.values() for kind, _, _ in variants}
    assert {"loops", "vectorised", "float64", "torch.func", "magics", "helper arguments"} <= kinds


def test_a_helper_that_passes_its_checks_is_used_and_the_report_says_so(tmp_path):
    """nc1 calling the student's helper with an extra optional argument keeps its points (the
    reference helper has no such argument); a wrong helper is replaced by the reference."""
    assignment = load_assignment("04_neural_collapse")
    changes = dict(next(c for k, _, c in VARIANTS["04_neural_collapse"]
                        if k == "helper arguments"))
    report = grade(with_answers(ROOT / assignment.master, changes, tmp_path / "a.ipynb"),
                   assignment, questions=["nc1"], seed=SEED)
    (nc1,) = report.questions
    assert nc1.points == nc1.max_points and nc1.helpers == {"class_means_and_covariances":
                                                            "yours"}, report.table()
    assert "uses your class_means_and_covariances" in report.table()
    wrong = {"class_means_and_covariances": NEW_MUTANTS["04_neural_collapse"][
        "class_means_and_covariances"][1][2]}
    report = grade(with_answers(ROOT / assignment.master, wrong, tmp_path / "b.ipynb"),
                   assignment, seed=SEED)
    stats, nc1 = report.questions[:2]
    assert stats.points < stats.max_points and nc1.points == nc1.max_points
    assert nc1.helpers == {"class_means_and_covariances": "reference"}
