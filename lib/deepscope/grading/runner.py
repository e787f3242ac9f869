"""Grade a submission: find its answer cells, run each question in the sandbox, judge, report.

Order matters for trust: every check's inputs and expected values are computed in this process
*before* any student code runs, only plain, checked data ever comes back from the sandbox
(`protocol`), and the verdicts are decided here. Every field of the report (points, timings,
problems, the ``sandbox`` description) is written here, never by the sandbox. Student-facing
messages come from `Fail` texts and the sandbox's (cleaned) error reports only: an exception
inside a check is named by its type, never shown with its text or the check's source.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import runpy
import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import sandbox
from .checks import Assignment, CaseContext, Check, Fail, Question
from .intake import read_submission
from .notebook import SHELL_SHIM, Cell, _analyse, cells_for
from .report import CheckResult, QuestionResult, Report

#: The book's assignments: id -> module defining ``ASSIGNMENT`` (imported on first use, so the
#: chapter libraries load only in the grader, never in the sandbox).
ASSIGNMENTS = {
    "01_saliency": "deepscope.grading.assignments.saliency",
    "02_loss_landscapes": "deepscope.grading.assignments.landscape",
    "03_contrastive_geometry": "deepscope.grading.assignments.contrastive",
    "04_neural_collapse": "deepscope.grading.assignments.collapse",
    "05_scaling_laws": "deepscope.grading.assignments.scaling",
}


class GradingError(RuntimeError):
    """The grader itself could not proceed (an unknown assignment, a broken private check file)."""


def load_assignment(assignment_id: str) -> Assignment:
    """Return the `Assignment` registered under ``assignment_id`` (e.g. ``"01_saliency"``), or
    the ``ASSIGNMENT`` defined by a Python file when ``assignment_id`` ends with ``.py`` (a
    course's own assignment)."""
    if assignment_id.endswith(".py"):
        try:
            found = runpy.run_path(assignment_id).get("ASSIGNMENT")
        except Exception as err:  # noqa: BLE001 - name the file, keep the cause
            raise GradingError(f"assignment file {assignment_id} failed to load: {err!r}") from err
        if not isinstance(found, Assignment):
            raise GradingError(f"{assignment_id} does not define ASSIGNMENT = Assignment(...)")
        return found
    if assignment_id not in ASSIGNMENTS:
        raise GradingError(f"unknown assignment {assignment_id!r}; known: "
                           f"{', '.join(ASSIGNMENTS)}")
    return importlib.import_module(ASSIGNMENTS[assignment_id]).ASSIGNMENT


def available_assignments() -> list[Assignment]:
    """Every registered assignment whose module imports (its chapter library exists)."""
    found = []
    for assignment_id in ASSIGNMENTS:
        try:
            found.append(load_assignment(assignment_id))
        except ImportError:
            continue
    return found


def detect_assignment(defined: set[str], candidates: Iterable[Assignment]) -> Assignment:
    """Pick the assignment whose graded functions the notebook's answer cells define most."""
    scored = sorted(((sum(q.function in defined for q in a.questions), a.id, a)
                     for a in candidates), key=lambda t: (-t[0], t[1]))
    if not scored or scored[0][0] == 0:
        raise GradingError("could not tell which assignment this notebook answers (no graded "
                           "function is defined); pass the assignment id explicitly")
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        raise GradingError(f"the notebook matches both {scored[0][1]} and {scored[1][1]}; "
                           "pass the assignment id explicitly")
    return scored[0][2]


def with_private_checks(assignment: Assignment, paths: Sequence[str | Path]) -> Assignment:
    """Return a copy of ``assignment`` extended by teachers' private check files.

    A private file is Python run in the grader (never in the sandbox). It may define
    ``CHECKS = {"function_name": [Check(...), ...]}`` (more checks for existing questions) and
    ``QUESTIONS = [Question(...), ...]`` (new questions).
    """
    extended = copy.copy(assignment)
    extended.questions = [copy.copy(q) for q in assignment.questions]
    for q in extended.questions:
        q.checks = list(q.checks)
    for path in paths:
        try:
            namespace = runpy.run_path(str(path))
        except Exception as err:  # noqa: BLE001 - name the file, keep the cause
            raise GradingError(f"private check file {path} failed to load: {err!r}") from err
        for function, checks in namespace.get("CHECKS", {}).items():
            try:
                question = extended.question(function)
            except KeyError as err:
                raise GradingError(f"{path}: {err.args[0]}") from err
            if not all(isinstance(c, Check) for c in checks):
                raise GradingError(f"{path}: CHECKS[{function!r}] must be a list of Check")
            question.checks.extend(dataclasses.replace(c, private=True) for c in checks)
        for question in namespace.get("QUESTIONS", []):
            if not isinstance(question, Question):
                raise GradingError(f"{path}: QUESTIONS must hold Question objects")
            extended.questions.append(dataclasses.replace(question, checks=[
                dataclasses.replace(c, private=True) for c in question.checks]))
        if not {"CHECKS", "QUESTIONS"} & set(namespace):
            raise GradingError(f"{path} defines neither CHECKS nor QUESTIONS")
    return extended


def _grader_files_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _error_text(info: dict) -> str:
    where = f"\n(at {info['where']})" if info.get("where") else ""
    return f"{info.get('message', 'an error')}{where}"


def _judge(question: Question, built: list, child: sandbox.ChildResult) -> list[CheckResult]:
    results = []
    offset = 0
    for check, (calls, judge) in zip(question.checks, built):
        outs = child.calls[offset:offset + len(calls)]
        offset += len(calls)
        message = ""
        if any(o is None for o in outs):
            message = child.reason or "the sandbox stopped before this check ran"
        elif any(kind == "error" for kind, _ in outs):
            info = next(value for kind, value in outs if kind == "error")
            message = _error_text(info)
        else:
            try:
                judge([value for _, value in outs])
            except Fail as fail:
                message = str(fail) or "failed"
            except Exception as err:  # noqa: BLE001 - an answer the judge could not even read
                # Only the type: the text may quote the check (a private file's secrets).
                message = f"the returned value could not be checked: {type(err).__name__}"
        if message and check.hint and not message.startswith("not implemented"):
            message += f"\nHint: {check.hint}"
        passed = not message
        results.append(CheckResult(check.name, float(check.points) if passed else 0.0,
                                   float(check.points), passed, message, private=check.private))
    return results


#: Built checks of recent gradings: a batch graded with one seed builds each check once.
_BUILT: dict = {}
_BUILT_MAX = 64


def new_seed() -> int:
    """A grading seed drawn from the operating system's entropy (31 bits, easy to type)."""
    return secrets.randbits(31)


def check_seed(seed: int, function: str, check_name: str) -> int:
    """The seed of one check's `CaseContext`, from the grading seed and the check's identity
    (so a check draws the same cases whatever else is graded)."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF,
             zlib.crc32(function.encode()), zlib.crc32(check_name.encode())]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def _build_checks(question: Question, device, seed: int = 0) -> list:
    """Make every check's calls and judge (inputs and expected values, in this process).

    Cached by (question, device, seed): the calls are copied into each sandbox and the judges
    only read what they captured, so one build serves a whole batch of submissions."""
    builders = [c.build for c in question.checks]
    key = (question.function, str(device), int(seed), tuple(c.name for c in question.checks),
           tuple(id(b) for b in builders))
    cached = _BUILT.get(key)
    if cached is not None and cached[0] == builders:
        return cached[1]
    built = []
    for index, check in enumerate(question.checks, start=1):
        ctx = CaseContext(device=torch.device(device),
                          seed=check_seed(seed, question.function, check.name))
        try:
            made_calls, judge = check.build(ctx)
        except Exception as err:  # noqa: BLE001 - the teacher's check, not the student's
            raise GradingError(f"check {check.name!r} of {question.function} could not build "
                               f"its inputs: {type(err).__name__}: {err}") from err
        for call in made_calls:
            call.label = f"check {index}: {check.name}"
        built.append((made_calls, judge))
    if len(_BUILT) >= _BUILT_MAX:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[key] = (builders, built)
    return built


def _provided(assignment: Assignment) -> set[str]:
    return _analyse(Cell(0, assignment.preamble + SHELL_SHIM)).defines


def _needed(assignment: Assignment, question: Question, cells) -> tuple[list[Cell], str, list]:
    """The cells a question runs, why it cannot run (or ""), and the other graded functions
    (with a correct version in ``assignment.substitutes``) that those cells call."""
    needed, problem = cells_for(cells, question.function, _provided(assignment))
    reached = set().union(*(c.uses for c in needed)) if needed else set()
    helpers = sorted(name for name in assignment.substitutes
                     if name != question.function and name in reached)
    return needed, problem, helpers


def _grade_question(number: int, question: Question, built: list, assignment: Assignment,
                    cells, limits: dict, helpers: dict[str, bool] | None = None,
                    tagged: bool = True) -> tuple[QuestionResult, str]:
    """Grade one question in its own sandbox; return its result and, when the grader itself
    failed to run it (sandbox set-up), the reason. ``helpers`` maps each graded function it
    calls to whether the student's version passed its own checks (kept) or not (the reference
    stands in)."""
    calls = [call for made_calls, _ in built for call in made_calls]
    needed, problem, called = _needed(assignment, question, cells)
    result = QuestionResult(number=number, function=question.function, title=question.title,
                            checks=[], cells=[c.number for c in needed])
    if problem:
        result.problem = problem
        result.checks = [CheckResult(c.name, 0.0, float(c.points), False, problem,
                                     private=c.private) for c in question.checks]
        return result, ""
    helpers = helpers or {}
    substituted = [name for name in called if not helpers.get(name, False)]
    for name in called:
        kept = helpers.get(name, False)
        result.helpers[name] = "yours" if kept else "reference"
        result.warnings.append(
            f"uses your {name} (it passed its own checks)" if kept else
            f"graded with a correct {name} in place of yours (yours did not pass its own "
            "checks, and loses its points only there)")
    untagged = [c.number for c in needed if not c.tagged and question.function in c.defines]
    if tagged and untagged:
        result.warnings.append(f"{question.function} is defined in cell {untagged[-1]}, which is "
                               "not tagged 'answer' (it was graded there all the same)")
    job = {"preamble": assignment.preamble + SHELL_SHIM, "function": question.function,
           "cells": [{"number": c.number, "source": c.source} for c in needed],
           "substitutes": [assignment.substitutes[name] for name in substituted],
           "calls": [(c.args, c.kwargs, c.grad_of, c.observed) for c in calls],
           "labels": [c.label for c in calls],
           "forbidden": list(assignment.forbidden)}
    child = sandbox.run_job(job, isolation=limits["isolation"],
                            time_limit=limits.get("time_limit") or question.time_limit,
                            memory_limit=limits.get("memory_limit"), device=limits["device"])
    if child.ended == "cancelled":
        raise KeyboardInterrupt
    result.seconds = child.seconds
    result.output = child.output
    result.checks = _judge(question, built, child)
    if child.ended != "done":
        result.problem = child.reason
    for error in child.cell_errors:
        where = f"answer cell {error['cell']}" if error.get("cell") is not None \
            else "the sandbox"
        result.warnings.append(f"{where} raised at its top level: {_error_text(error)}")
    return result, (child.reason if child.ended in ("setup", "startup") else "")


def _grading_order(assignment: Assignment, chosen: list, cells) -> tuple[list, dict]:
    """The questions to grade, helpers first (also those not chosen, whose verdict a chosen
    question needs), and each question's helpers. Returns ([(number, question, shown)], deps)."""
    numbers = {q.function: n for n, q in enumerate(assignment.questions, start=1)}
    deps: dict[str, list[str]] = {}
    todo = [q for _, q in chosen]
    while todo:
        q = todo.pop()
        if q.function in deps:
            continue
        deps[q.function] = []
        for name in _needed(assignment, q, cells)[2]:
            if name in numbers:
                deps[q.function].append(name)
                todo.append(assignment.question(name))
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return  # a cycle: its helpers are then graded with the reference
        visiting.add(name)
        for helper in deps[name]:
            visit(helper)
        order.append(name)

    for name in sorted(deps, key=numbers.get):
        visit(name)
    shown = {q.function for _, q in chosen}
    return [(numbers[f], assignment.question(f), f in shown) for f in order], deps


def _grade_all(assignment: Assignment, chosen: list, cells, tagged: bool, limits: dict, device,
               seed: int, jobs: int) -> tuple[list[QuestionResult], list[str]]:
    """Grade the chosen questions, each helper before the questions that call it; return their
    results and the reasons the grader itself failed to run any of them (sandbox set-up).

    Every check is built first, in this thread and in order, so the drawn inputs and the
    references are the same whatever ``jobs`` is; only the sandboxed runs go in parallel. A
    question that calls another graded function waits for that function's verdict: it keeps
    the student's version if it passed its own checks, else gets the reference."""
    order, deps = _grading_order(assignment, chosen, cells)
    built = {q.function: _build_checks(q, device, seed) for _, q, _ in order}
    futures: dict = {}

    def run(number: int, question: Question, earlier: dict):
        helpers = {}
        for name in deps[question.function]:
            if name in earlier:  # else a cycle of helpers: the reference stands in
                result, _ = earlier[name].result()
                helpers[name] = result.points == result.max_points and not result.problem
        return _grade_question(number, question, built[question.function], assignment, cells,
                               limits, helpers, tagged)

    sandbox.CANCEL.clear()
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        try:
            for number, question, _ in order:
                futures[question.function] = pool.submit(run, number, question, dict(futures))
            graded = {name: future.result() for name, future in futures.items()}
        except KeyboardInterrupt:
            sandbox.CANCEL.set()  # the running questions stop now, not at their limits
            raise
    shown = [(n, q) for n, q, visible in order if visible]
    results = [graded[q.function][0] for _, q in sorted(shown, key=lambda item: item[0])]
    return results, [why for _, (_, why) in graded.items() if why]


def grade(
    submission: str | Path,
    assignment: str | Assignment | None = None,
    *,
    questions: Sequence[str] | None = None,
    private_checks: Sequence[str | Path] = (),
    device: str = "cpu",
    time_limit: float | None = None,
    memory_limit: int | None = sandbox.MEMORY_LIMIT,
    jobs: int = 1,
    isolation: str = "auto",
    trust_submissions: bool = False,
    seed: int | None = None,
    student_id: str = "",
) -> Report:
    """Grade one submitted notebook; return its `Report`.

    Args:
        submission: path of the student's notebook.
        assignment: an assignment id (``"01_saliency"``), an `Assignment`, or None to detect it
            from the functions the answer cells define.
        questions: grade only these functions (default: every question).
        private_checks: teachers' extra check files (see `with_private_checks`).
        device: where inputs are built and references computed (``"cuda"`` adds real device
            preservation checks; the GPU is bound into the sandbox).
        time_limit: wall-clock seconds per question (default: each question's own limit).
        memory_limit: bytes per question (None: unlimited); see `sandbox`.
        jobs: questions graded at the same time (each in its own sandbox).
        isolation: ``"auto"`` (namespaces, else bubblewrap), ``"namespaces"``,
            ``"bubblewrap"`` or ``"none"``; see `sandbox.choose`.
        trust_submissions: allow grading without isolation where none is available.
        seed: the grading seed the checks draw their cases from (None: a fresh one, recorded
            in the report; grade a batch with one seed so every student meets the same cases).
        student_id: the student's id for gradebooks and feedback files (``Report.id``).

    Returns:
        A `Report`; a notebook that cannot be read gets a report with ``error`` set and 0 points.

    Raises:
        GradingError: the grader cannot start (unknown assignment, broken check file, no
            isolation available and submissions not trusted).
    """
    start = time.perf_counter()
    try:
        path_kind = sandbox.choose(isolation, trust_submissions)
    except sandbox.IsolationUnavailable as err:
        raise GradingError(str(err)) from err
    sandbox.warm_up()  # the zygote imports torch while this process reads and prepares
    report = Report(submission=str(submission), device=str(device), id=student_id,
                    started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    seed=new_seed() if seed is None else int(seed))
    from .. import __version__

    report.grader = f"deepscope {__version__}"
    read = read_submission(submission)
    report.sha256, cells, report.error = read.sha256, read.cells, read.error
    if isinstance(assignment, str):
        assignment = load_assignment(assignment)
    elif assignment is None:
        defined = set().union(*(c.defines for c in cells)) if cells else set()
        try:
            assignment = detect_assignment(defined, available_assignments())
        except GradingError as err:
            report.error = report.error or str(err)
            report.seconds = time.perf_counter() - start
            return report
    if private_checks:
        assignment = with_private_checks(assignment, private_checks)
    report.assignment, report.title = assignment.id, assignment.title
    report.sandbox = sandbox.describe(path_kind, memory_limit, time_limit, str(device))
    if path_kind == "none":
        report.warnings.append(report.sandbox["warning"])
    if not read.tagged:
        report.warnings.append("no cell is tagged 'answer' (were the tags removed?); every code "
                               "cell was considered")
    chosen = [(n, q) for n, q in enumerate(assignment.questions, start=1)
              if questions is None or q.function in questions]
    if questions is not None:
        unknown = set(questions) - {q.function for q in assignment.questions}
        if unknown:
            raise GradingError(f"assignment {assignment.id} has no question(s) {sorted(unknown)}")
    limits = {"time_limit": time_limit, "memory_limit": memory_limit, "device": str(device),
              "isolation": path_kind}
    before = _grader_files_digest() if path_kind == "none" else ""
    if not report.error:
        report.questions, failures = _grade_all(assignment, chosen, cells, read.tagged, limits,
                                                device, report.seed, jobs)
        if failures:
            report.error = f"the grader could not run this notebook: {failures[0]}"
    if report.error:
        report.questions = [QuestionResult(n, q.function, q.title, [
            CheckResult(c.name, 0.0, float(c.points), False, report.error) for c in q.checks],
            problem=report.error) for n, q in chosen]
    if before and _grader_files_digest() != before:
        report.warnings.append("the grader's own files changed while this submission was "
                               "graded without isolation; check the installation")
    report.seconds = time.perf_counter() - start
    return report
