"""Assignments that grade themselves (DESIGN.md section 6).

A teacher writes a *master* notebook whose answer cells hold the solution between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; `release` writes the student copy with stubs
that raise ``NotImplementedError``. `grade` runs each question of a submission in its own
sandboxed process (`sandbox`), calls the student's function on seeded inputs, and judges the
outputs in the grader's process against the library's reference and known properties
(`checks`). The result is a `Report`: a points table and a JSON document for gradebooks.

    deepscope grade chapters/01_saliency/assignment.ipynb --json report.json
    deepscope release instructor/01_saliency/assignment.ipynb chapters/01_saliency/assignment.ipynb

This package never imports a chapter library at import time: the sandbox imports it too, and a
submission must not find the reference there.
"""

from __future__ import annotations

from .checks import (
    Assignment,
    Call,
    CaseContext,
    Check,
    Fail,
    Question,
    expect_close,
    expect_number_close,
    expect_scalar,
    expect_tensor,
)
from .notebook import NotebookError, release, release_notebook, release_text
from .report import CheckResult, QuestionResult, Report, gradebook_csv
from .runner import (
    ASSIGNMENTS,
    GradingError,
    available_assignments,
    grade,
    load_assignment,
    with_private_checks,
)

__all__ = [
    "ASSIGNMENTS", "Assignment", "Call", "CaseContext", "Check", "CheckResult", "Fail",
    "GradingError", "NotebookError", "Question", "QuestionResult", "Report",
    "available_assignments", "expect_close", "expect_number_close", "expect_scalar",
    "expect_tensor", "grade", "gradebook_csv", "load_assignment", "release", "release_notebook",
    "release_text", "with_private_checks",
]
