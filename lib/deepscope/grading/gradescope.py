"""Gradescope: an autograder zip for an assignment, and Gradescope's ``results.json``.

    deepscope gradescope 01_saliency -o autograder.zip [--checks private.py]
    deepscope grade SUBMISSION_DIR --assignment 01_saliency --gradescope results.json

The zip (Gradescope's autograder specification: https://gradescope-autograders.readthedocs.io,
"Autograder Specifications") holds ``setup.sh``, which installs a CPU build of torch at the
grader's version and this book's library from a wheel built from the running installation (the
same checks, byte for byte), ``run_autograder``, which grades ``/autograder/submission`` into
``/autograder/results/results.json``, and the teacher's private check files. Each check becomes
one Gradescope test (score, max_score, status, name, number, output; private checks are shown
only ``after_published``), and the whole report rides along in ``extra_data``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import json
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .report import Report

#: The version of Gradescope's results format this module writes (its spec has no number).
SPEC = "https://gradescope-autograders.readthedocs.io/en/latest/specs/"


def results(report: Report) -> dict:
    """Return Gradescope's ``results.json`` for one graded submission: one test per check."""
    tests = []
    for q in report.questions:
        notes = [f"{q.problem}"] if q.problem else []
        notes += [f"note: {w}" for w in q.warnings]
        for i, c in enumerate(q.checks, start=1):
            output = c.message if not c.passed else ""
            if i == 1 and notes:
                output = "\n".join([output, *notes]).strip()
            tests.append({
                "name": f"{q.function}: {c.name}",
                "number": f"{q.number}.{i}",
                "score": float(c.points),
                "max_score": float(c.max_points),
                "status": "passed" if c.passed else "failed",
                "output": output,
                "output_format": "text",
                "visibility": "after_published" if c.private else "visible",
                "tags": [q.function],
            })
    head = [f"{report.assignment}: {report.points:g} / {report.max_points:g} points "
            f"(grading seed {report.seed}, {report.grader})"]
    if report.error:
        head.append(f"Your notebook could not be graded: {report.error}")
    head += [f"note: {w}" for w in report.warnings]
    return {
        "score": float(report.points),
        "execution_time": int(round(report.seconds)),
        "output": "\n".join(head),
        "output_format": "text",
        "test_output_format": "text",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": report.to_dict(),
    }


def failure(message: str) -> dict:
    """The ``results.json`` of a submission that could not be graded at all (no notebook, two
    notebooks): no score, the reason in the output."""
    return {"score": 0.0, "output": message, "output_format": "text",
            "stdout_visibility": "hidden", "tests": [], "extra_data": {"error": message}}


def write_results(path: str | Path, data: dict) -> Path:
    """Write a ``results.json`` document (strict JSON: no NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# The autograder zip


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel() -> tuple[str, bytes]:
    """Build a wheel of the running ``deepscope`` (its files as installed, its metadata);
    return ``(file name, bytes)``. Pure Python: no build backend, no network."""
    import deepscope

    package = Path(deepscope.__file__).resolve().parent
    meta = importlib.metadata.metadata("deepscope")
    version = deepscope.__version__
    dist_info = f"deepscope-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[f"deepscope/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    lines = ["Metadata-Version: 2.1", "Name: deepscope", f"Version: {version}",
             f"Summary: {meta.get('Summary', '')}"]
    if meta.get("Requires-Python"):
        lines.append(f"Requires-Python: {meta['Requires-Python']}")
    lines += [f"Requires-Dist: {r}" for r in (importlib.metadata.requires("deepscope") or [])
              if "extra ==" not in r]
    files[f"{dist_info}/METADATA"] = ("\n".join(lines) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: deepscope gradescope\n"
                                   b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return f"deepscope-{version}-py3-none-any.whl", buffer.getvalue()


def setup_script(wheel: str) -> str:
    """``setup.sh``: torch for the CPU at the grader's version, then this book's wheel."""
    import torch

    torch_version = torch.__version__.split("+")[0]
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
# Written by `deepscope gradescope` (deepscope {wheel.split('-')[1]}, torch {torch_version}).
set -euxo pipefail
cd "$(dirname "$0")"
# bubblewrap: the grader's second isolation path, where the container refuses namespaces
if command -v apt-get >/dev/null; then
    apt-get update && apt-get install -y --no-install-recommends bubblewrap || true
fi
python3 -m pip install --no-cache-dir "torch=={torch_version}" \\
    --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install --no-cache-dir "./{wheel}"
python3 -m deepscope.cli assignments   # fails the build now, not at the first submission
"""


def run_script(assignment_id: str, checks: Sequence[str], options: Sequence[str]) -> str:
    """``run_autograder``: grade the submission folder into results/results.json."""
    extra = "".join(f' \\\n    --checks "$ROOT/source/checks/{name}"' for name in checks)
    extra += "".join(f" {option}" for option in options)
    return f"""#!/usr/bin/env bash
# Gradescope runs this for every submission. AUTOGRADER_ROOT (default /autograder) and
# DEEPSCOPE_PYTHON (default python3) let you try it on your own machine.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
mkdir -p "$ROOT/results"
"${{DEEPSCOPE_PYTHON:-python3}}" -m deepscope.cli grade "$ROOT/submission" \\
    --assignment {assignment_id} --gradescope "$ROOT/results/results.json"{extra}
code=$?
# 1: a notebook could not be graded (results.json says why); Gradescope shows the results.
[ "$code" -le 1 ] || exit "$code"
"""


def autograder_zip(assignment_id: str, out: str | Path, *, checks: Sequence[str | Path] = (),
                   options: Sequence[str] = ()) -> Path:
    """Write Gradescope's autograder zip for an assignment; return its path.

    Args:
        assignment_id: e.g. ``"01_saliency"``, or a course's own ``ASSIGNMENT`` file (``.py``,
            copied into the zip).
        out: the zip to write.
        checks: private check files (copied into the zip; their checks are shown to students
            only after the grades are published).
        options: more ``deepscope grade`` options for ``run_autograder`` (e.g. ``--jobs 2``).
    """
    from .runner import load_assignment

    load_assignment(assignment_id)  # an unknown id or a broken file fails now
    wheel_name, wheel = build_wheel()
    files: dict[str, tuple[bytes, bool]] = {wheel_name: (wheel, False)}
    names = []
    for i, path in enumerate(checks, start=1):
        name = f"{i:02d}_{Path(path).name}"
        files[f"checks/{name}"] = (Path(path).read_bytes(), False)
        names.append(name)
    grade_id = assignment_id
    if assignment_id.endswith(".py"):
        files[f"assignment/{Path(assignment_id).name}"] = (Path(assignment_id).read_bytes(), False)
        grade_id = f'"$ROOT/source/assignment/{Path(assignment_id).name}"'
    files["setup.sh"] = (setup_script(wheel_name).encode(), True)
    files["run_autograder"] = (run_script(grade_id, names, options).encode(), True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (data, executable) in sorted(files.items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return out
