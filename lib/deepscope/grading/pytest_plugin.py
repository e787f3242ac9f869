"""Grade submissions through pytest: one test per question, failing with the grader's message.

    pytest -p deepscope.grading.pytest_plugin --grade submissions/
    pytest -p deepscope.grading.pytest_plugin --grade alice.ipynb --grade-checks private.py

With ``--grade``, every ``.ipynb`` under the given paths is collected as a submission (and
nothing else is collected from notebooks); each notebook is graded once, in the sandbox, and
yields one test item per question, named after the function. The points still come from
`deepscope.grading.grade`: pytest only reports them (``--grade-json DIR`` also writes each
submission's JSON report there, as a one-report list like ``deepscope grade --json``, named
after its path, so two ``assignment.ipynb`` in different folders never overwrite each other).
One grading seed serves the whole session (``--grade-seed N`` repeats a grading). A notebook
that cannot be graded, for whatever reason, is one failed test; collection never stops.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_WRITTEN = pytest.StashKey[set]()
_SEED = pytest.StashKey[int]()


def pytest_addoption(parser):
    group = parser.getgroup("deepscope grading")
    group.addoption("--grade", action="store_true",
                    help="collect .ipynb files as assignment submissions and grade them")
    group.addoption("--grade-assignment", metavar="ID", default=None,
                    help="assignment id or FILE.py (default: detected per notebook)")
    group.addoption("--grade-checks", action="append", default=[], metavar="FILE.py",
                    help="a private check file (repeatable)")
    group.addoption("--grade-time-limit", type=float, default=None, metavar="S",
                    help="wall-clock seconds per question")
    group.addoption("--grade-json", default=None, metavar="DIR",
                    help="write each submission's JSON report into DIR")
    group.addoption("--grade-isolation", default="auto",
                    choices=("auto", "namespaces", "bubblewrap", "none"),
                    help="how submissions are isolated (see deepscope grade --isolation)")
    group.addoption("--grade-trust-submissions", action="store_true",
                    help="grade without isolation where none is available")
    group.addoption("--grade-seed", type=int, default=None, metavar="N",
                    help="grading seed of the drawn cases (default: one fresh seed per session)")


def pytest_collect_file(file_path: Path, parent):
    if parent.config.getoption("grade") and file_path.suffix == ".ipynb" \
            and ".ipynb_checkpoints" not in file_path.parts:
        return Submission.from_parent(parent, path=file_path)
    return None


def report_name(path: Path, root: Path, taken: set[str]) -> str:
    """A report file name for ``path`` that no other submission of the run shares: its path
    under ``root`` with separators as ``__`` (and a counter if that is taken)."""
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        relative = Path(*path.resolve().parts[1:])
    stem = re.sub(r"[^\w.-]+", "_", "__".join(relative.with_suffix("").parts))[:200] or "report"
    name, count = f"{stem}.json", 1
    while name in taken:
        count += 1
        name = f"{stem}-{count}.json"
    taken.add(name)
    return name


class Submission(pytest.File):
    """A submitted notebook: graded once when collected; one item per question."""

    def collect(self):
        from .report import reports_json
        from .runner import grade, new_seed

        config = self.config
        if _SEED not in config.stash:
            chosen = config.getoption("grade_seed")
            config.stash[_SEED] = new_seed() if chosen is None else chosen
        try:
            report = grade(self.path, config.getoption("grade_assignment"),
                           private_checks=config.getoption("grade_checks"),
                           time_limit=config.getoption("grade_time_limit"),
                           isolation=config.getoption("grade_isolation"),
                           trust_submissions=config.getoption("grade_trust_submissions"),
                           seed=config.stash[_SEED], student_id=self.path.stem)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - one notebook's failure is one failed test
            yield Unreadable.from_parent(self, name="submission", error=str(err) if type(
                err).__name__ == "GradingError" else f"the grader failed on this notebook "
                f"({type(err).__name__})")
            return
        out_dir = config.getoption("grade_json")
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            taken = config.stash.setdefault(_WRITTEN, set())
            name = report_name(self.path, config.invocation_params.dir, taken)
            (Path(out_dir) / name).write_text(reports_json([report]) + "\n")
        if report.error:
            yield Unreadable.from_parent(self, name="submission", error=report.error)
            return
        for question in report.questions:
            yield QuestionItem.from_parent(self, name=question.function, result=question)


class QuestionFailed(Exception):
    """A question that did not earn all its points."""


class QuestionItem(pytest.Item):
    """One graded question; fails unless it earned every point."""

    def __init__(self, *, result, **kwargs):
        super().__init__(**kwargs)
        self.result = result
        self.user_properties.append(("points", result.points))
        self.user_properties.append(("max_points", result.max_points))

    def runtest(self):
        failed = [c for c in self.result.checks if not c.passed]
        if failed:
            lines = [f"{self.result.points:g} / {self.result.max_points:g} points"]
            for c in failed:
                lines.append(f"FAILED {c.name} [0 / {c.max_points:g}]: {c.message}")
            raise QuestionFailed("\n".join(lines))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, QuestionFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # pragma: no cover - a bug in the plugin itself


class Unreadable(pytest.Item):
    """Stands for a submission that could not be graded at all."""

    def __init__(self, *, error, **kwargs):
        super().__init__(**kwargs)
        self.error = error

    def runtest(self):
        raise QuestionFailed(f"not graded: {self.error}")

    def repr_failure(self, excinfo):
        return str(excinfo.value)
