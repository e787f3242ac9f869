"""The teacher's entry points: `deepscope grade/release/assignments` and the pytest plugin."""

import json

import nbformat
from deepscope import cli

from .conftest import TOY


def test_grade_command_prints_table_and_writes_reports(tmp_path, toy, capsys):
    sub = toy.write(tmp_path, toy.SOLUTION)
    out_json, out_csv = tmp_path / "r" / "report.json", tmp_path / "gradebook.csv"
    code = cli.main(["grade", sub, "--assignment", TOY, "--json", str(out_json),
                     "--csv", str(out_csv), "--time-limit", "20"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "assignment toy: A toy assignment" in printed and "4 / 4" in printed
    assert [r["points"] for r in json.loads(out_json.read_text())] == [4.0]  # always a list
    assert out_csv.read_text().splitlines()[1].startswith("sub,")
    assert ",toy,3,1,4,4,," in out_csv.read_text().splitlines()[1]


def test_grade_command_many_submissions_quiet_and_failures(tmp_path, toy, capsys):
    good = toy.write(tmp_path, toy.SOLUTION, name="a.ipynb")
    broken = tmp_path / "b.ipynb"
    broken.write_text("nonsense")
    code = cli.main(["grade", good, str(broken), "--assignment", TOY, "--quiet", "--json", "-",
                     "--question", "norm", "--memory-limit", "0"])
    out = capsys.readouterr().out
    assert code == 1  # one submission could not be graded
    assert f"1 / 1  {good}" in out and "(not graded:" in out
    data = json.loads(out[out.index("["):out.rindex("]") + 1])
    assert [r["points"] for r in data] == [1.0, 0.0]
    assert cli.main(["grade", good, "--assignment", "99_none"]) == 2
    assert "unknown assignment" in capsys.readouterr().err


def test_release_command_and_its_check(tmp_path, capsys):
    master = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n"
                                     "    ### END SOLUTION\n")
    cell.metadata["tags"] = ["answer"]
    master.cells = [cell]
    m, s = tmp_path / "m.ipynb", tmp_path / "s.ipynb"
    nbformat.write(master, m)
    assert cli.main(["release", str(m), str(s)]) == 0
    assert cli.main(["release", str(m), str(s), "--check"]) == 0
    s.write_text(s.read_text().replace("YOUR CODE HERE", "changed"))
    assert cli.main(["release", str(m), str(s), "--check"]) == 1
    assert "differs from the student copy" in capsys.readouterr().err
    assert cli.main(["release", str(tmp_path / "none.ipynb"), str(s)]) == 2


def test_assignments_command(capsys):
    assert cli.main(["assignments", TOY]) == 0
    out = capsys.readouterr().out
    assert "| toy | 1. Softmax over the last dimension | `softmax` | 3 |" in out
    assert "| toy | **total** | | **4** |" in out
    assert cli.main(["assignments", TOY, "--details"]) == 0
    out = capsys.readouterr().out
    assert "| agrees with torch.softmax (2); is stable for large inputs" in out
    assert cli.main(["assignments", "99_none"]) == 2


def test_pytest_plugin_grades_one_item_per_question(tmp_path, toy, pytester):
    toy.write(pytester.path, toy.SOLUTION, name="alice.ipynb")
    naive = {**toy.SOLUTION, "softmax": "def softmax(x):\n    e = x.exp()\n"
             "    return e / e.sum(-1, keepdim=True)\n"}
    toy.write(pytester.path, naive, name="bob.ipynb")
    (pytester.path / "carol.ipynb").write_text("{")
    result = pytester.runpytest(
        "-p", "deepscope.grading.pytest_plugin", "--grade", "--grade-assignment", TOY,
        "--grade-json", str(tmp_path / "reports"), "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*alice.ipynb::softmax PASSED*", "*bob.ipynb::softmax FAILED*",
                                 "*carol.ipynb::submission FAILED*"])
    assert "FAILED is stable for large inputs" in result.stdout.str()
    bob = json.loads((tmp_path / "reports" / "bob.json").read_text())  # a list, as --json
    alice = json.loads((tmp_path / "reports" / "alice.json").read_text())
    assert [r["points"] for r in bob] == [3.0] and bob[0]["id"] == "bob"
    assert bob[0]["seed"] == alice[0]["seed"] is not None  # one seed for the session


def test_pytest_plugin_is_inert_without_the_flag(pytester, toy):
    toy.write(pytester.path, toy.SOLUTION, name="alice.ipynb")
    result = pytester.runpytest("-p", "deepscope.grading.pytest_plugin", "-p", "no:cacheprovider")
    assert result.ret == 5  # nothing collected


def test_pytest_plugin_a_bad_notebook_is_one_failed_test(tmp_path, toy, pytester, monkeypatch):
    """Malformed files, and even a grader crash on one notebook, fail that notebook only; two
    notebooks with the same name in different folders get two report files."""
    from deepscope.grading import runner

    for folder in ("alice", "bob"):
        (pytester.path / folder).mkdir()
        toy.write(pytester.path / folder, toy.SOLUTION, name="assignment.ipynb")
    (pytester.path / "nbformat.ipynb").write_text('{"nbformat": "4", "cells": []}')
    (pytester.path / "nested.ipynb").write_text("[" * 100_000)
    toy.write(pytester.path, toy.SOLUTION, name="crash.ipynb")
    real = runner.grade

    def crash_on_one(path, *args, **kwargs):
        if str(path).endswith("crash.ipynb"):
            raise RuntimeError("a bug in the grader, triggered by this notebook")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runner, "grade", crash_on_one)
    result = pytester.runpytest(
        "-p", "deepscope.grading.pytest_plugin", "--grade", "--grade-assignment", TOY,
        "--grade-json", str(tmp_path / "reports"), "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4, failed=3)
    assert result.ret == 1 and "during collection" not in result.stdout.str()  # not stopped
    result.stdout.fnmatch_lines(["*crash.ipynb::submission FAILED*",
                                 "*nbformat.ipynb::submission FAILED*",
                                 "*nested.ipynb::submission FAILED*"])
    assert "the grader failed on this notebook (RuntimeError)" in result.stdout.str()
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["alice__assignment.json", "bob__assignment.json", "nbformat.json",
                     "nested.json"]
