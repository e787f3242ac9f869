"""The result of grading one submission: a points table for people, JSON for gradebooks."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .protocol import clean_text

#: Version of the JSON report's layout (bump when a field changes meaning). Format 2 added
#: ``id``, ``seed``, each question's ``cells`` and ``helpers`` and each check's ``private``;
#: ``--json`` always writes a list of reports. The layout is `report.schema.json`.
REPORT_FORMAT = 2
SCHEMA = Path(__file__).with_name("report.schema.json")


def _fmt(points: float) -> str:
    return f"{points:g}"


@dataclass
class CheckResult:
    """One check of a question: its points and, when it failed, why."""

    name: str
    points: float
    max_points: float
    passed: bool
    message: str = ""
    private: bool = False


@dataclass
class QuestionResult:
    """One question: the checks' results, the time its sandboxed run took, what went wrong."""

    number: int
    function: str
    title: str
    checks: list[CheckResult]
    seconds: float = 0.0
    problem: str = ""
    warnings: list[str] = field(default_factory=list)
    output: str = ""
    #: The notebook's cells this question ran (1-based numbers, all cells counted).
    cells: list[int] = field(default_factory=list)
    #: Other graded functions it calls: name -> "yours" (it passed its own checks) or
    #: "reference" (it did not, and a correct one stood in).
    helpers: dict[str, str] = field(default_factory=dict)

    @property
    def points(self) -> float:
        """Points earned."""
        return float(sum(c.points for c in self.checks))

    @property
    def max_points(self) -> float:
        """Points available."""
        return float(sum(c.max_points for c in self.checks))

    def summary(self) -> str:
        """One line for the table: passed, or the first reason it did not."""
        failed = [c for c in self.checks if not c.passed]
        if not failed:
            return "passed"
        if self.problem:
            return self.problem
        first = failed[0].message.splitlines()[0] if failed[0].message else failed[0].name
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return first + more


@dataclass
class Report:
    """The grade of one submission: per-question results and how the grading ran."""

    submission: str
    id: str = ""
    assignment: str = ""
    title: str = ""
    questions: list[QuestionResult] = field(default_factory=list)
    sha256: str = ""
    seconds: float = 0.0
    device: str = "cpu"
    sandbox: dict = field(default_factory=dict)
    grader: str = ""
    started: str = ""
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    #: The grading seed the drawn cases came from (``deepscope grade --seed`` repeats them).
    seed: int | None = None

    @property
    def points(self) -> float:
        """Points earned over all questions."""
        return float(sum(q.points for q in self.questions))

    @property
    def max_points(self) -> float:
        """Points available over all questions."""
        return float(sum(q.max_points for q in self.questions))

    def to_dict(self) -> dict:
        """Return the machine-readable report (what ``--json`` writes)."""
        data = asdict(self)
        data["format"] = REPORT_FORMAT
        data["points"] = self.points
        data["max_points"] = self.max_points
        for q, qd in zip(self.questions, data["questions"]):
            qd["points"] = q.points
            qd["max_points"] = q.max_points
        return data

    def to_json(self) -> str:
        """Return `to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)

    def failed_checks(self) -> list[tuple[QuestionResult, CheckResult]]:
        """Every check that did not pass, with its question."""
        return [(q, c) for q in self.questions for c in q.checks if not c.passed]

    def table(self, details: bool = True) -> str:
        """Return the points table (and, with ``details``, every failed check with its message)."""
        lines = [f"deepscope grade: {self.submission}"]
        if self.assignment:
            seed = f" (grading seed {self.seed})" if self.seed is not None else ""
            lines.append(f"assignment {self.assignment}: {self.title}{seed}")
        if self.error:
            lines.append(f"NOT GRADED: {self.error}")
        width = max([len(q.function) for q in self.questions] + [8])
        lines.append("")
        lines.append(f"  #  {'question':<{width}}  {'points':>11}  {'time':>7}  result")
        for q in self.questions:
            pts = f"{_fmt(q.points)} / {_fmt(q.max_points)}"
            result = q.summary()
            if len(result) > 70:
                result = result[:67] + "..."
            lines.append(f"{q.number:>3}  {q.function:<{width}}  {pts:>11}  {q.seconds:>5.1f} s"
                         f"  {result}")
        total = f"{_fmt(self.points)} / {_fmt(self.max_points)}"
        lines.append(f"     {'total':<{width}}  {total:>11}  {self.seconds:>5.1f} s")
        if details:
            for q in self.questions:
                failed = [c for c in q.checks if not c.passed]
                if not failed and not q.warnings:
                    continue
                lines.append("")
                lines.append(f"{q.number}. {q.function} ({q.title})")
                for c in failed:
                    lines.append(f"   FAILED {c.name} [0 / {_fmt(c.max_points)}]")
                    for text in c.message.splitlines():
                        lines.append(f"          {text}")
                for w in q.warnings:
                    lines.append(f"   note: {w}")
        for w in self.warnings:
            lines.append(f"WARNING: {w}")
        return clean_text("\n".join(lines), limit=None)  # no terminal escapes, whatever came


def spreadsheet_safe(value) -> str:
    """A CSV cell that a spreadsheet shows as text: no control characters, and a leading
    ``=``, ``+``, ``-``, ``@`` (a formula: CSV injection) escaped with an apostrophe."""
    text = clean_text(value, limit=None)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def reports_json(reports: list[Report]) -> str:
    """Return the JSON document ``--json`` writes: always a list of reports, one per submission
    (validated by `report.schema.json`)."""
    return json.dumps([r.to_dict() for r in reports], indent=2, allow_nan=False, default=str)


def gradebook_csv(reports: list[Report]) -> str:
    """Return one CSV row per submission: student id, file, assignment, points per question,
    total, max, why it was not graded, and the isolation it was graded under."""
    functions: list[str] = []
    for r in reports:
        for q in r.questions:
            if q.function not in functions:
                functions.append(q.function)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "submission", "assignment", *map(spreadsheet_safe, functions), "total",
                     "max", "error", "isolation"])
    for r in reports:
        by_name = {q.function: q.points for q in r.questions}
        points = [_fmt(by_name.get(f, 0.0)) for f in functions]
        isolation = r.sandbox.get("isolation", "")
        writer.writerow([spreadsheet_safe(r.id), spreadsheet_safe(r.submission),
                         spreadsheet_safe(r.assignment), *points, _fmt(r.points),
                         _fmt(r.max_points), spreadsheet_safe(r.error),
                         "NOT ISOLATED (--trust-submissions)" if isolation == "none"
                         else isolation])
    return buffer.getvalue()
