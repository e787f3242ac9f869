"""Assignments that grade themselves (DESIGN.md sections 6 and 10).

A teacher writes a *master* notebook whose answer cells hold the solution between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; `release` writes the student copy with stubs
that raise ``NotImplementedError``. `grade` runs each question of a submission in its own
sandboxed process (`sandbox`), calls the student's function on inputs it made, and judges the
outputs in the grader's process against the library's reference and known properties
(`checks`). The result is a `Report`: a points table, a JSON document for gradebooks, feedback
files for students (`feedback`), Gradescope's ``results.json`` (`gradescope`), an nbgrader
source notebook (`nbgrader`) and a table of near-duplicate answers (`similarity`).

    deepscope grade submissions/01_saliency --csv gradebook.csv --feedback feedback/
    deepscope release instructor/01_saliency/assignment.ipynb chapters/01_saliency/assignment.ipynb

**How every check is designed.** The check code is public (students can read it), so a check
must not be passable by anything other than a correct answer:

1. *Cases are drawn at grading time.* Each check runs its published case (fixed seeds, what
   ``deepscope assignments --details`` describes) and cases drawn from the grading seed
   (`CaseContext.fresh_seed`, ``integers``, ``choice``): other shapes, sizes, dtypes, targets,
   seeds and parameters. An answer special-cased to the published shapes, or a lookup table of
   the published inputs, fails the drawn cases. The seed is recorded in the report and
   ``--seed`` repeats a grading exactly; a batch is graded with one seed, so every student
   meets the same cases.
2. *Estimators are judged statistically*, as random variables: calls with different seeds (or
   fresh draws) differ and the same seed repeats; the spread over repeated calls falls with
   ``samples`` as theory says (a chi-square statistic of the whitened errors, or of the errors
   against the exact variance, must lie between bounds that a correct answer leaves with
   probability below 1e-6 per check); the mean agrees with the exact expectation within that
   bound. An estimator that ignores its randomness (no noise unless handed noise, the exact
   value whatever ``samples`` and ``seed`` say, one draw repeated) fails.
3. *Fits are judged by the objective they reach*: the student's parameters are scored on the
   reference's objective, on the published data and on drawn data, and must reach the
   reference optimum to within 0.1% (2% for the five-parameter Chinchilla fit); and they must
   predict fresh data drawn from the same law within 5% of the reference's parameters. A fit
   that stops at a worse optimum fails even when its parameters look close.
4. *The notebook's rules are checked* (`rules`; each notebook states them): a graded function
   leaves its inputs as it found them (tensors, arrays, dicts, a model's parameters, flags and
   train/eval mode), removes its hooks, leaves the global random generators alone unless its
   question says otherwise, and returns tensors on the device its inputs came on (checked for
   real when grading with ``--device cuda``). Each question has a check that observes a call
   (`Call.observe`, `expect_rules`) and costs its points when a rule is broken.
5. *Failure messages* say what is wrong, on which case (its shape, dtype, parameters), by how
   much (relative error), and give the hint; expected values appear with two significant
   digits at most (`checks.approx`), enough to debug, too few to copy.

Every statistical bound is calibrated: ``python -m tools.calibrate_grader`` grades each master
over many grading seeds and reports how often a correct answer lost a point (it must not), and
``tests/grading`` holds the masters (full marks), correct-but-different answers (full marks) and
mutants of every kind above (each loses points on its question).

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
    approx,
    combine,
    expect_close,
    expect_number_close,
    expect_rules,
    expect_scalar,
    expect_tensor,
    relative,
)
from .notebook import NotebookError, release, release_notebook, release_text
from .report import CheckResult, QuestionResult, Report, gradebook_csv, reports_json
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
    "GradingError", "NotebookError", "Question", "QuestionResult", "Report", "approx",
    "available_assignments", "combine", "expect_close", "expect_number_close", "expect_rules",
    "expect_scalar", "expect_tensor", "grade", "gradebook_csv", "load_assignment", "relative",
    "release", "release_notebook", "release_text", "reports_json", "with_private_checks",
]
