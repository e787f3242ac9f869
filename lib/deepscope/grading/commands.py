"""What ``deepscope grade``, ``release``, ``assignments`` and ``gradescope`` do.

`deepscope.cli` declares the arguments and calls these functions (imported only when one of the
commands runs, so ``deepscope info`` stays quick).

A batch no notebook can break: each notebook's reading, grading and reporting is its own; the
CSV and JSON files are rewritten (atomically) after every notebook, so a crash or a Ctrl-C keeps
what was graded, and ``--resume`` skips the notebooks already graded with the same sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from . import batch, sandbox
from .intake import IntakeError, read_bytes
from .notebook import NotebookError, release, release_text
from .protocol import clean_text
from .report import CheckResult, QuestionResult, Report, gradebook_csv, reports_json
from .runner import GradingError, available_assignments, grade, load_assignment, new_seed


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file); "-": stdout."""
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.",
                                     delete=False) as file:
        file.write(text + "\n")
    os.replace(file.name, target)


def report_from_dict(data: dict) -> Report:
    """Rebuild a `Report` from its JSON form (``--resume`` reads the previous reports)."""
    questions = [QuestionResult(
        number=q.get("number", 0), function=q.get("function", ""), title=q.get("title", ""),
        checks=[CheckResult(c.get("name", ""), float(c.get("points", 0)),
                            float(c.get("max_points", 0)), bool(c.get("passed")),
                            c.get("message", ""), bool(c.get("private", False)))
                for c in q.get("checks", [])],
        seconds=float(q.get("seconds", 0)), problem=q.get("problem", ""),
        warnings=list(q.get("warnings", [])), output=q.get("output", ""),
        cells=list(q.get("cells", [])), helpers=dict(q.get("helpers", {})))
        for q in data.get("questions", [])]
    fields = ("submission", "id", "assignment", "title", "sha256", "seconds", "device",
              "sandbox", "grader", "started", "error", "warnings", "seed")
    return Report(**{k: data[k] for k in fields if k in data}, questions=questions)


def previous_reports(path: str) -> dict[tuple[str, str], Report]:
    """The reports of an earlier run, by (submission, sha256), for ``--resume``."""
    if path == "-" or not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else data.get("reports", [data])
    found = {}
    for item in items:
        if isinstance(item, dict) and item.get("sha256"):
            if not str(item.get("error", "")).startswith("the grader could not run"):
                found[(item.get("submission", ""), item["sha256"])] = report_from_dict(item)
    return found


def _sha256(path: str) -> str:
    try:
        return hashlib.sha256(read_bytes(path)).hexdigest()
    except IntakeError:
        return ""


def _failed(submission: str, err: BaseException, student_id: str = "",
            seed: int | None = None) -> Report:
    """The report of a notebook on which the grader itself failed (a bug: this notebook only)."""
    return Report(submission=submission, id=student_id, seed=seed,
                  error=f"the grader failed on this notebook ({type(err).__name__}); the other "
                  "notebooks are not affected")


def cmd_grade(args) -> int:
    """Grade each submission (a folder: every notebook below it), print its table, write the
    JSON/CSV reports as it goes, then the teaching outputs (feedback, Gradescope, similarity);
    1 if any could not be graded (unreadable, unknown assignment), 2 if the grader could not
    start, 130 when interrupted (what was graded is written; ``--resume`` finishes)."""
    if args.resume and not args.json:
        print("deepscope grade: --resume needs --json (it reads the reports written so far)",
              file=sys.stderr)
        return 2
    try:
        submissions = batch.collect(args.submissions)
        ids = batch.student_ids(submissions, getattr(args, "id", "stem"))
        if getattr(args, "gradescope", None) and len(submissions) != 1:
            raise batch.BatchError(f"a Gradescope submission must hold exactly one notebook; "
                                   f"this one holds {len(submissions)}: "
                                   + ", ".join(p.name for p in submissions[:5]))
        isolation = sandbox.choose(args.isolation, args.trust_submissions)
    except (batch.BatchError, sandbox.IsolationUnavailable) as err:
        return _batch_error(args, err)
    try:
        done = previous_reports(args.json) if args.resume else {}
    except (ValueError, OSError) as err:
        print(f"deepscope grade: {err}", file=sys.stderr)
        return 2
    if isolation == "none":
        print("deepscope grade: WARNING: grading WITHOUT ISOLATION (--trust-submissions): "
              "submissions run with your permissions", file=sys.stderr)
    # One seed for the whole class; a resumed batch keeps the seed its first part was graded with.
    seeds = {r.seed for r in done.values() if r.seed is not None}
    if getattr(args, "seed", None) is not None:
        seed = args.seed
    elif len(seeds) == 1:
        seed = seeds.pop()
    else:
        seed = new_seed()
    reports: list[Report] = []
    try:
        for index, (submission, student_id) in enumerate(zip(submissions, ids), start=1):
            key = (str(submission), _sha256(submission))
            if key in done:
                report = done[key]
                report.id = report.id or student_id
                print(clean_text(f"already graded (same sha256): {submission}", None))
            else:
                report = _grade_one(submission, args, isolation, seed, student_id)
            _record(reports, report, args, final=index == len(submissions))
            if key not in done:
                _show(report, args)
    except GradingError as err:
        print(f"deepscope grade: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndeepscope grade: interrupted; {len(reports)} of {len(submissions)} "
              "notebooks graded" + (f" and written to {args.json}; rerun with --resume to "
                                    "finish" if args.json else ""), file=sys.stderr)
        return 130
    _teaching_outputs(args, reports, submissions, ids)
    return 1 if any(r.error for r in reports) else 0


def _batch_error(args, err: Exception) -> int:
    """No notebook, clashing ids, no isolation: on Gradescope the student sees why in
    results.json (1); elsewhere the teacher does, and nothing is graded (2)."""
    print(f"deepscope grade: {err}", file=sys.stderr)
    if getattr(args, "gradescope", None):
        from . import gradescope

        gradescope.write_results(args.gradescope, gradescope.failure(str(err)))
        return 1
    return 2


def _teaching_outputs(args, reports, submissions, ids) -> None:
    """Feedback files, Gradescope's results.json, the table of similar answers."""
    if getattr(args, "feedback", None):
        from .feedback import write_feedback

        written = write_feedback(reports, args.feedback)
        print(f"wrote {len(written)} feedback files to {args.feedback}", file=sys.stderr)
    if getattr(args, "gradescope", None):
        from . import gradescope

        gradescope.write_results(args.gradescope, gradescope.results(reports[0]))
    if getattr(args, "similarity", None):
        from . import similarity

        graded = [r for r in reports if r.assignment and not r.error]
        if graded:
            assignment = load_assignment(args.assignment or graded[0].assignment)
            stub = Path(__file__).resolve().parents[3] / assignment.student
            text = similarity.report(
                [p for p, r in zip(submissions, reports) if r in graded],
                [i for i, r in zip(ids, reports) if r in graded], assignment,
                threshold=args.similarity_threshold,
                student_copy=stub if assignment.student and stub.is_file() else None)
            _write(args.similarity, text.rstrip("\n"))


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C until the block ends, then deliver it to the previous handler.

    A handler, not a signal mask: a mask set in the main thread does not stop a process-directed
    SIGINT from landing in another thread (torch's, the sandbox's), whose handler flag the main
    thread then acts on at once."""
    if threading.current_thread() is not threading.main_thread():  # handlers: main thread only
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _record(reports: list[Report], report: Report, args, final: bool) -> None:
    """Add ``report`` and rewrite the report files with every notebook graded so far (stdout:
    only at the end). Ctrl-C waits until both files hold the same notebooks."""
    with _ctrl_c_deferred():
        reports.append(report)
        if args.json and (args.json != "-" or final):
            _write(args.json, reports_json(reports))
        if args.csv and (args.csv != "-" or final):
            _write(args.csv, gradebook_csv(reports).rstrip("\n"))


def _grade_one(submission, args, isolation: str, seed: int, student_id: str) -> Report:
    try:
        return grade(submission, args.assignment, questions=args.question or None,
                     private_checks=args.checks or (), device=args.device,
                     time_limit=args.time_limit,
                     memory_limit=None if args.memory_limit == 0 else
                     int(args.memory_limit * 2**30), jobs=args.jobs, isolation=isolation,
                     trust_submissions=args.trust_submissions, seed=seed,
                     student_id=student_id)
    except (GradingError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - whatever a notebook does, the batch goes on
        return _failed(str(submission), err, student_id, seed)


def _show(report: Report, args) -> None:
    if args.quiet:
        print(clean_text(f"{report.points:g} / {report.max_points:g}  {report.submission}"
                         + (f"  (not graded: {report.error})" if report.error else ""), None),
              flush=True)
    else:
        print(report.table(details=not args.brief), flush=True)
        print()


def cmd_release(args) -> int:
    """Write the student copy of a master (or, with ``--check``, verify the committed one; with
    ``--nbgrader``, write nbgrader's source version instead)."""
    try:
        if getattr(args, "nbgrader", False):
            return _release_nbgrader(args)
        if args.check:
            if Path(args.student).read_text() != release_text(args.master):
                print(f"{args.student} differs from the student copy of {args.master}; run: "
                      f"deepscope release {args.master} {args.student}", file=sys.stderr)
                return 1
            print(f"{args.student} is the current student copy of {args.master}")
            return 0
        path = release(args.master, args.student)
    except (NotebookError, OSError, GradingError) as err:
        print(f"deepscope release: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _release_nbgrader(args) -> int:
    from .nbgrader import write_nbgrader_source
    from .notebook import code_cells, read_notebook
    from .runner import detect_assignment

    if getattr(args, "assignment", None):
        assignment = load_assignment(args.assignment)
    else:
        cells, _ = code_cells(read_notebook(args.master))
        assignment = detect_assignment(set().union(*(c.defines for c in cells)),
                                       available_assignments())
    path = write_nbgrader_source(args.master, args.student, assignment)
    print(f"wrote {path} (nbgrader source of {assignment.id}: put it in your course's "
          "source/<assignment>/ folder, then run nbgrader generate_assignment)")
    return 0


def cmd_gradescope(args) -> int:
    """Write Gradescope's autograder zip for an assignment."""
    from .gradescope import autograder_zip

    options = [f"--jobs {args.jobs}"]
    if args.time_limit is not None:
        options.append(f"--time-limit {args.time_limit:g}")
    if args.seed is not None:
        options.append(f"--seed {args.seed}")
    if getattr(args, "trust_submissions", False):
        options.append("--trust-submissions")
    try:
        path = autograder_zip(args.assignment, args.output, checks=args.checks or (),
                              options=options)
    except (GradingError, OSError) as err:
        print(f"deepscope gradescope: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: upload it as the autograder of a Gradescope programming assignment")
    return 0


def points_table(assignments, details: bool = False) -> str:
    """Return the Markdown points table of the given assignments (with ``details``, each
    question's checks and their points too)."""
    head = "| Assignment | Question | Function | Points |" + (" Checks |" if details else "")
    lines = [head, "|---" * (5 if details else 4) + "|"]
    for a in assignments:
        for i, q in enumerate(a.questions, start=1):
            row = f"| {a.id} | {i}. {q.title} | `{q.function}` | {q.points:g} |"
            if details:
                checks = "; ".join(f"{c.name} ({c.points:g})" for c in q.checks)
                row += " " + checks.replace("|", "\\|") + " |"
            lines.append(row)
        lines.append(f"| {a.id} | **total** | | **{a.points:g}** |" + (" |" if details else ""))
    return "\n".join(lines)


def cmd_assignments(args) -> int:
    """Print the points table of every assignment (or of the ones named)."""
    try:
        chosen = [load_assignment(i) for i in args.ids] if args.ids else available_assignments()
    except GradingError as err:
        print(f"deepscope assignments: {err}", file=sys.stderr)
        return 2
    print(points_table(chosen, details=getattr(args, "details", False)))
    return 0
