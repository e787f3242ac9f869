"""What ``deepscope grade``, ``deepscope release`` and ``deepscope assignments`` do.

`deepscope.cli` declares the arguments and calls these functions (imported only when one of the
commands runs, so ``deepscope info`` stays quick).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .notebook import NotebookError, release, release_text
from .report import gradebook_csv
from .runner import GradingError, available_assignments, grade, load_assignment


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def cmd_grade(args) -> int:
    """Grade each submission, print its table, write the JSON/CSV reports; 1 if any could not
    be graded (unreadable, unknown assignment), else 0 whatever the scores."""
    reports = []
    try:
        for submission in args.submissions:
            report = grade(
                submission, args.assignment, questions=args.question or None,
                private_checks=args.checks or (), device=args.device,
                time_limit=args.time_limit,
                memory_limit=None if args.memory_limit == 0 else int(args.memory_limit * 2**30),
                jobs=args.jobs)
            reports.append(report)
            if not args.quiet:
                print(report.table(details=not args.brief), flush=True)
                print()
    except GradingError as err:
        print(f"deepscope grade: {err}", file=sys.stderr)
        return 2
    if args.json:
        data = reports[0].to_dict() if len(reports) == 1 else {
            "reports": [r.to_dict() for r in reports]}
        _write(args.json, json.dumps(data, indent=2, default=str))
    if args.csv:
        _write(args.csv, gradebook_csv(reports).rstrip("\n"))
    if args.quiet:
        for r in reports:
            print(f"{r.points:g} / {r.max_points:g}  {r.submission}"
                  + (f"  (not graded: {r.error})" if r.error else ""))
    return 1 if any(r.error for r in reports) else 0


def cmd_release(args) -> int:
    """Write the student copy of a master (or, with ``--check``, verify the committed one)."""
    try:
        if args.check:
            if Path(args.student).read_text() != release_text(args.master):
                print(f"{args.student} differs from the student copy of {args.master}; run: "
                      f"deepscope release {args.master} {args.student}", file=sys.stderr)
                return 1
            print(f"{args.student} is the current student copy of {args.master}")
            return 0
        path = release(args.master, args.student)
    except (NotebookError, OSError) as err:
        print(f"deepscope release: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
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
