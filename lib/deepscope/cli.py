"""The ``deepscope`` command line: ``deepscope info``; ``grade``, ``release``, ``assignments`` and
``gradescope`` for teachers (`deepscope.grading`)."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys

#: Import names of the `oracle` extra's test-only peer libraries.
ORACLE_MODULES = ("captum", "pyhessian", "loss_landscapes")


def info() -> dict[str, str]:
    """Return what ``deepscope info`` prints: versions, the device, threads, the oracle extra."""
    import torch

    from . import __version__
    from .device import default_threads, full_mode, get_device

    missing = [m for m in ORACLE_MODULES if importlib.util.find_spec(m) is None]
    return {
        "deepscope": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(get_device()),
        "cuda available": str(torch.cuda.is_available()),
        "torch threads (setup_notebook)": str(default_threads()),
        "cost mode": "full" if full_mode() else "quick",
        "oracle extra": "installed" if not missing else f"missing ({', '.join(missing)})",
    }


def _cmd_info(_args) -> int:
    rows = info()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _grading(name: str):
    """A handler that imports `deepscope.grading.commands` only when its command runs."""

    def handler(args) -> int:
        from .grading import commands

        return getattr(commands, name)(args)

    return handler


def _add_grading_commands(sub) -> None:
    p = sub.add_parser("grade", help="grade submitted assignment notebooks",
                       description="Grade assignment notebooks: each question runs in its own "
                       "sandboxed process; prints a points table per submission.")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                   help="notebooks, or folders (every .ipynb below them)")
    p.add_argument("--json", metavar="REPORT", help="write the machine-readable reports ('-': "
                   "stdout): a list, one report per submission")
    p.add_argument("--csv", metavar="GRADEBOOK", help="write one CSV row per submission")
    p.add_argument("--assignment", metavar="ID", help="e.g. 01_saliency (default: detected)")
    p.add_argument("--checks", action="append", metavar="FILE.py",
                   help="a private check file to add (repeatable)")
    p.add_argument("--question", action="append", metavar="FUNCTION",
                   help="grade only this question (repeatable)")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="wall-clock seconds per question (default: each question's own, 60)")
    p.add_argument("--memory-limit", type=float, default=4.0, metavar="GiB",
                   help="address space per question on the CPU (default 4; 0: unlimited)")
    p.add_argument("--device", default="cpu", help="where inputs and references live "
                   "(cuda adds real device checks; default cpu)")
    p.add_argument("--jobs", type=int, default=1, help="questions graded in parallel")
    p.add_argument("--resume", action="store_true", help="skip the notebooks that the --json "
                   "file already holds with the same sha256 (after a crash or Ctrl-C)")
    p.add_argument("--isolation", default="auto",
                   choices=("auto", "namespaces", "bubblewrap", "none"),
                   help="how submissions are isolated (default auto: Linux namespaces, else "
                   "bubblewrap; none needs --trust-submissions)")
    p.add_argument("--trust-submissions", action="store_true",
                   help="grade even where no isolation is available: the submissions' code "
                   "then runs with your permissions (every report says so)")
    p.add_argument("--brief", action="store_true", help="the table without failure details")
    p.add_argument("--quiet", action="store_true", help="one line per submission")
    _add_teaching_options(p)
    p.set_defaults(handler=_grading("cmd_grade"))
    p = sub.add_parser("release", help="write the student copy of an assignment master",
                       description="Replace every ### BEGIN SOLUTION ... ### END SOLUTION block "
                       "with a stub and strip outputs.")
    p.add_argument("master", metavar="MASTER.ipynb")
    p.add_argument("student", metavar="STUDENT.ipynb")
    p.add_argument("--check", action="store_true",
                   help="only verify that STUDENT is the current student copy")
    p.add_argument("--nbgrader", action="store_true", help="write nbgrader's source version "
                   "instead (solution cells, one autograded cell per question)")
    p.add_argument("--assignment", metavar="ID", help="with --nbgrader (default: detected)")
    p.set_defaults(handler=_grading("cmd_release"))
    p = sub.add_parser("assignments", help="the points table of the assignments")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--details", action="store_true", help="also list every check")
    p.set_defaults(handler=_grading("cmd_assignments"))
    _add_gradescope_command(sub)


def _add_teaching_options(p) -> None:
    """``deepscope grade``'s options for a teacher's batch (issue 16)."""
    p.add_argument("--id", choices=("stem", "parent"), default="stem",
                   help="student id: the file name without .ipynb (stem, default) or the "
                   "notebook's folder (parent)")
    p.add_argument("--seed", type=int, metavar="N", help="grading seed of the drawn cases "
                   "(default: a fresh one, shown in every report; one seed per command)")
    p.add_argument("--feedback", metavar="DIR",
                   help="write a Markdown and an HTML feedback page per student into DIR")
    p.add_argument("--gradescope", metavar="RESULTS.json",
                   help="write Gradescope's results.json (one submission)")
    p.add_argument("--similarity", metavar="FILE.md",
                   help="write the table of near-duplicate answers per question ('-': stdout)")
    p.add_argument("--similarity-threshold", type=float, default=0.8, metavar="T",
                   help="list pairs at least this similar (0-1; default 0.8)")


def _add_gradescope_command(sub) -> None:
    p = sub.add_parser("gradescope", help="write Gradescope's autograder zip for an assignment",
                       description="Write an autograder zip for a Gradescope programming "
                       "assignment: setup.sh (a CPU torch and this book's library at this "
                       "version), run_autograder and your private check files.")
    p.add_argument("assignment", metavar="ASSIGNMENT", help="e.g. 01_saliency, or FILE.py")
    p.add_argument("-o", "--output", default="autograder.zip", metavar="ZIP")
    p.add_argument("--checks", action="append", metavar="FILE.py",
                   help="a private check file (repeatable; shown after grades are published)")
    p.add_argument("--jobs", type=int, default=2, help="questions graded in parallel")
    p.add_argument("--time-limit", type=float, metavar="S", help="seconds per question")
    p.add_argument("--seed", type=int, metavar="N",
                   help="one grading seed for every submission (default: one per submission)")
    p.add_argument("--trust-submissions", action="store_true",
                   help="let run_autograder grade where the container allows no isolation "
                   "(the submission's code can then read and write the autograder's files)")
    p.set_defaults(handler=_grading("cmd_gradescope"))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``deepscope`` command."""
    parser = argparse.ArgumentParser(
        prog="deepscope", description="deepscope: the library of the science-of-deep-learning book"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p_info = sub.add_parser("info", help="versions, device, threads and installed extras")
    p_info.set_defaults(handler=_cmd_info)
    _add_grading_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``deepscope`` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
