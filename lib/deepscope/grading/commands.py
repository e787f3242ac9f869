"""What ``deepscope grade``, ``release``, ``assignments`` and ``gradescope`` do.

`deepscope.cli` declares the arguments and calls these functions (imported only when one of the
commands runs, so ``deepscope info`` stays quick).
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import batch
from .notebook import NotebookError, release, release_text
from .report import gradebook_csv, reports_json
from .runner import GradingError, available_assignments, grade, load_assignment, new_seed


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def cmd_grade(args) -> int:
    """Grade each submission (a folder: every notebook below it), print its table, write the
    JSON/CSV reports and the teaching outputs; 1 if any could not be graded (unreadable,
    unknown assignment), else 0 whatever the scores; 2 if the grader could not start."""
    try:
        submissions = batch.collect(args.submissions)
        ids = batch.student_ids(submissions, getattr(args, "id", "stem"))
        if getattr(args, "gradescope", None) and len(submissions) != 1:
            raise batch.BatchError(f"a Gradescope submission must hold exactly one notebook; "
                                   f"this one holds {len(submissions)}: "
                                   + ", ".join(p.name for p in submissions[:5]))
    except batch.BatchError as err:
        return _batch_error(args, err)
    seed = args.seed if getattr(args, "seed", None) is not None else new_seed()
    reports = []
    try:
        for submission, student_id in zip(submissions, ids):
            report = grade(
                submission, args.assignment, questions=args.question or None,
                private_checks=args.checks or (), device=args.device,
                time_limit=args.time_limit,
                memory_limit=None if args.memory_limit == 0 else int(args.memory_limit * 2**30),
                jobs=args.jobs, seed=seed, student_id=student_id)
            reports.append(report)
            if not args.quiet:
                print(report.table(details=not args.brief), flush=True)
                print()
    except GradingError as err:
        print(f"deepscope grade: {err}", file=sys.stderr)
        return 2
    if args.json:
        _write(args.json, reports_json(reports))
    if args.csv:
        _write(args.csv, gradebook_csv(reports).rstrip("\n"))
    if args.quiet:
        for r in reports:
            print(f"{r.points:g} / {r.max_points:g}  {r.submission}"
                  + (f"  (not graded: {r.error})" if r.error else ""))
    _teaching_outputs(args, reports, submissions, ids)
    return 1 if any(r.error for r in reports) else 0


def _batch_error(args, err: Exception) -> int:
    """No notebook, or clashing ids: on Gradescope the student sees why in results.json (1);
    elsewhere the teacher does, and nothing is graded (2)."""
    if getattr(args, "gradescope", None):
        from . import gradescope

        gradescope.write_results(args.gradescope, gradescope.failure(str(err)))
        print(f"deepscope grade: {err}", file=sys.stderr)
        return 1
    print(f"deepscope grade: {err}", file=sys.stderr)
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
