"""Malformed notebooks and hostile file names: each is that notebook's failure alone, with a
reason, never the batch's; and no file name becomes a spreadsheet formula.

Each case: (id, how the file is made, what the report must say). None of these needs a
sandbox: they are read, checked and refused (or graded) by the grader itself.
"""

from __future__ import annotations

import csv
import io
import json
import os

import nbformat
import pytest
from deepscope.grading import grade, gradebook_csv

from . import attack
from .conftest import notebook


def _nb(**changes) -> bytes:
    data = json.loads(nbformat.writes(notebook(attack.CORRECT)))
    data.update(changes)
    return json.dumps(data).encode()


def _cells(*cells) -> bytes:
    return _nb(cells=list(cells))


GOOD_CELL = {"cell_type": "code", "metadata": {"tags": ["answer"]}, "source": attack.CORRECT,
             "outputs": [], "execution_count": None}

#: (id, the file's bytes (or a callable making the path), what ``report.error`` says).
NOT_GRADED = [
    ("nbformat-as-string", _nb(nbformat="4"), "'nbformat' must be the integer 4, found str '4'"),
    ("nbformat-3", _nb(nbformat=3), "must be the integer 4, found int 3"),
    ("nbformat-missing", b'{"cells": []}', "found nothing"),
    ("nested-brackets", b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    ("nested-objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "JSON nested too deeply"),
    ("binary-garbage", os.urandom(4096) + b"\xff\xfe\x00", "not UTF-8 text"),
    ("utf16", json.dumps({"nbformat": 4, "cells": []}).encode("utf-16"), "UTF-16 text"),
    ("empty", b"", "empty file"),
    ("whitespace", b"  \n\t ", "empty file"),
    ("truncated", _nb()[:-40], "not valid JSON"),
    ("json-array", b"[1, 2, 3]", "the JSON is a list, not an object"),
    ("cells-not-a-list", _nb(cells={"0": GOOD_CELL}), "'cells' must be a list"),
    ("cell-is-a-string", _cells("def attack(x): return 2 * x"), "cell 1 is not a cell"),
    ("source-is-a-number", _cells({**GOOD_CELL, "source": 42}), "'source' must be text"),
    ("source-list-of-numbers", _cells({**GOOD_CELL, "source": [1, 2]}),
     "'source' must be text"),
    ("huge-integer", b'{"nbformat": 4, "cells": [], "x": ' + b"9" * 5000 + b"}",
     "not a notebook"),
    ("too-many-cells", _cells(*[{"cell_type": "raw", "source": ""}] * 10_001),
     "more than the 10000 allowed"),
]

#: Notebooks that are read fine but whose cells are hostile to the parser: graded, 0 points,
#: the problem says why.
GRADED_WITH_A_PROBLEM = [
    ("300k-term-expression",
     _cells({**GOOD_CELL, "source": "def attack(x):\n    return " + "+".join(["x"] * 300_000)}),
     "cannot be parsed"),
    ("deep-parentheses",
     _cells({**GOOD_CELL, "source": "def attack(x):\n    return " + "(" * 5000 + "x"
             + ")" * 5000}), "does not compile"),
    ("null-bytes", _cells({**GOOD_CELL, "source": "def attack(x):\n    return 2 * x\x00\n"}),
     "null bytes"),
    ("deep-nesting-of-defs",
     _cells({**GOOD_CELL, "source": "".join(" " * i + "def f():\n" for i in range(120))
             + " " * 120 + "pass\n"}), "no cell defines"),
]


@pytest.mark.parametrize("name, data, reason", NOT_GRADED, ids=[c[0] for c in NOT_GRADED])
def test_a_malformed_notebook_is_refused_with_a_reason(tmp_path, name, data, reason):
    path = tmp_path / f"{name}.ipynb"
    path.write_bytes(data)
    report = grade(path, attack.ASSIGNMENT)
    assert reason in report.error, report.error
    assert report.points == 0 and report.max_points == 1.0 and "NOT GRADED" in report.table()


@pytest.mark.parametrize("name, data, problem", GRADED_WITH_A_PROBLEM,
                         ids=[c[0] for c in GRADED_WITH_A_PROBLEM])
def test_a_cell_hostile_to_the_parser_costs_its_question(tmp_path, name, data, problem):
    path = tmp_path / f"{name}.ipynb"
    path.write_bytes(data)
    report = grade(path, attack.ASSIGNMENT)
    assert not report.error and report.points == 0
    assert problem in report.questions[0].problem, report.questions[0].problem


def test_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.ipynb"
    path.write_bytes(b"\xef\xbb\xbf" + _nb())
    assert grade(path, attack.ASSIGNMENT).points == 1.0


@pytest.mark.parametrize("make, reason", [
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "not a regular file"),
    (lambda p: os.mkdir(p), "not a regular file"),
    (lambda p: open(p, "wb").truncate(65 * 2**20), "larger than the 64 MiB"),
    (lambda p: None, "no such notebook"),
], ids=["fifo", "symlink-to-dev-zero", "directory", "sparse-65-MiB", "missing"])
def test_files_that_are_not_notebooks_never_block_the_grader(tmp_path, make, reason):
    path = tmp_path / "odd.ipynb"
    make(str(path))
    report = grade(path, attack.ASSIGNMENT)
    assert reason in report.error, report.error


FORMULAS = ["=cmd|' -C calc'!A0.ipynb", "+SUM(1,1).ipynb", "-2+3.ipynb", "@SUM(A1).ipynb",
            "=HYPERLINK(\"http:x\").ipynb"]


def test_file_names_never_become_spreadsheet_formulas(tmp_path, monkeypatch):
    """A teacher grading ``*.ipynb`` in the submissions folder gets the names as they are."""
    monkeypatch.chdir(tmp_path)
    names = FORMULAS + ["line\nbreak\x1b[2J.ipynb"]
    reports = []
    for name in names:
        (tmp_path / name).write_bytes(_nb())
        reports.append(grade(name, attack.ASSIGNMENT, student_id=name.removesuffix(".ipynb")))
    rows = list(csv.reader(io.StringIO(gradebook_csv(reports))))[1:]  # id, submission, ...
    assert [r[3] for r in rows] == ["1"] * len(names)  # graded as usual
    assert [r[1] for r in rows[:-1]] == ["'" + name for name in FORMULAS]
    assert [r[0] for r in rows[:-1]] == ["'" + n.removesuffix(".ipynb") for n in FORMULAS]
    assert rows[-1][1] == "line\nbreak.ipynb"  # quoted by the CSV, escape removed
