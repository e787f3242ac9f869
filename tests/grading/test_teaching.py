"""A teacher's workflow: folders, student ids, one JSON shape with its schema, feedback files,
similar answers, Gradescope (results.json and a mock run of the autograder zip) and nbgrader
(the source notebook's metadata)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import nbformat
import pytest
from deepscope import cli
from deepscope.grading import grade, load_assignment
from deepscope.grading.batch import BatchError, collect, student_ids
from deepscope.grading.feedback import html_page, markdown
from deepscope.grading.gradescope import autograder_zip, results
from deepscope.grading.nbgrader import nbgrader_source
from deepscope.grading.report import SCHEMA, reports_json
from deepscope.grading.similarity import similar_pairs, tokens

from .conftest import TOY
from .mutants import master_solution
from .variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads(SCHEMA.read_text())
GRADESCOPE_SCHEMA = json.loads(Path(__file__).with_name(
    "gradescope_results.schema.json").read_text())
HOSTILE = ("def softmax(x):\n    raise ValueError('<script>alert(1)</script>\\n```\\n# owned "
           "\\x1b[31mred\\u202e')\n")


def validate_reports(reports) -> list:
    data = json.loads(reports_json(reports))
    jsonschema.validate(data, REPORT_SCHEMA)
    return data


def test_folders_expand_to_their_notebooks_and_ids_are_unique(tmp_path, toy):
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / ".ipynb_checkpoints").mkdir()
    a = Path(toy.write(tmp_path / "alice", toy.SOLUTION, name="assignment.ipynb"))
    b = Path(toy.write(tmp_path / "bob", toy.SOLUTION, name="assignment.ipynb"))
    toy.write(tmp_path / "bob" / ".ipynb_checkpoints", toy.SOLUTION, name="assignment.ipynb")
    assert collect([tmp_path]) == [a, b] == collect([tmp_path, a])
    assert student_ids([a, b], "parent") == ["alice", "bob"]
    with pytest.raises(BatchError, match="would both get the id 'assignment'.*--id parent"):
        student_ids([a, b], "stem")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no .ipynb file below it"):
        collect([tmp_path / "empty"])


def test_grade_a_folder_with_ids_json_csv_and_feedback(tmp_path, toy, capsys):
    for name in ("alice", "bob"):
        (tmp_path / "class" / name).mkdir(parents=True)
    toy.write(tmp_path / "class" / "alice", toy.SOLUTION, name="assignment.ipynb")
    toy.write(tmp_path / "class" / "bob", {**toy.SOLUTION, "softmax": HOSTILE},
              name="assignment.ipynb")
    out = tmp_path / "out"
    code = cli.main(["grade", str(tmp_path / "class"), "--assignment", TOY, "--id", "parent",
                     "--json", str(out / "r.json"), "--csv", str(out / "g.csv"), "--seed", "7",
                     "--feedback", str(out / "feedback"), "--quiet"])
    assert code == 0
    data = json.loads((out / "r.json").read_text())
    jsonschema.validate(data, REPORT_SCHEMA)
    assert [(r["id"], r["points"], r["seed"]) for r in data] == [("alice", 4.0, 7),
                                                                  ("bob", 1.0, 7)]
    rows = (out / "g.csv").read_text().splitlines()
    assert rows[0].startswith("id,submission,") and rows[1].startswith("alice,")
    assert sorted(p.name for p in (out / "feedback").iterdir()) == [
        "alice.html", "alice.md", "bob.html", "bob.md"]
    page = (out / "feedback" / "bob.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "\x1b" not in page and "\u202e" not in page
    md = (out / "feedback" / "bob.md").read_text()
    assert "````text" in md  # a fence longer than the message's own ``` run
    assert "\x1b" not in md and "| 1 | Softmax over the last dimension (`softmax`) | 0 / 3 |" in md
    assert cli.main(["grade", str(tmp_path / "class"), "--assignment", TOY]) == 2  # ids clash
    assert "would both get the id" in capsys.readouterr().err


def test_every_kind_of_report_validates_against_the_shipped_schema(tmp_path, toy):
    private = tmp_path / "private.py"
    private.write_text("from deepscope.grading import Call, Check\n"
                       "def _b(ctx):\n    return [Call(ctx.randn(3, seed=1))], lambda outs: None\n"
                       "CHECKS = {'norm': [Check('private', 1, _b)]}\n")
    hang = {**toy.SOLUTION, "norm": "def norm(x):\n    while True:\n        pass\n"}
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{")
    reports = [grade(toy.write(tmp_path, toy.SOLUTION, name="a.ipynb"), toy.ASSIGNMENT,
                     private_checks=[private], student_id="a"),
               grade(toy.write(tmp_path, hang, name="b.ipynb"), toy.ASSIGNMENT, time_limit=2),
               grade(broken, toy.ASSIGNMENT), grade(tmp_path / "missing.ipynb"),
               grade(toy.write(tmp_path, {"x": "y = 1\n"}, name="c.ipynb"))]
    data = validate_reports(reports)
    assert data[0]["questions"][1]["checks"][1]["private"] is True
    assert data[1]["questions"][1]["problem"].startswith("timed out")
    assert data[2]["error"] and data[4]["error"]
    bad = json.loads(json.dumps(data))
    bad[0]["questions"][0]["checks"][0]["points"] = "4"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, REPORT_SCHEMA)


def test_feedback_pages_state_points_failures_and_hints(tmp_path, toy):
    naive = {**toy.SOLUTION, "softmax": "def softmax(x):\n    e = x.exp()\n"
             "    return e / e.sum(-1, keepdim=True)\n"}
    report = grade(toy.write(tmp_path, naive), toy.ASSIGNMENT, student_id="dana", seed=3)
    md, page = markdown(report), html_page(report)
    for text in (md, page):
        assert "3 / 4" in text and "is stable for large inputs" in text
        assert "Hint: subtract the row maximum" in text and "grading seed 3" in text
    assert page.startswith("<!DOCTYPE html>") and md.startswith("# toy: feedback for dana")


def test_similarity_finds_a_disguised_copy_and_not_an_independent_answer():
    master = master_solution(ROOT / "instructor/01_saliency/assignment.ipynb",
                             "integrated_gradients")
    disguised = (master.replace("total", "acc").replace("alpha", "t").replace("point", "z")
                 .replace("rows", "idx").replace("    return", "    # the result\n    return")
                 .replace('"""Return the integrated gradients', '"""IG'))
    independent = next(c["integrated_gradients"] for k, _, c in VARIANTS["01_saliency"]
                       if k == "vectorised")
    keep = {"torch", "F", "nn", "np", "math"}
    assert tokens(master, keep) == tokens(disguised, keep)  # names, comments, docstring: gone
    answers = {"ann": master, "ben": disguised, "cat": independent}
    pairs, short = similar_pairs(answers, keep=keep, threshold=0.8, function="ig")
    assert [(p.first, p.second) for p in pairs] == [("ann", "ben")] and short == []
    assert pairs[0].similarity == 1.0
    everyone, _ = similar_pairs(answers, keep=keep, threshold=0.0)
    assert max(p.similarity for p in everyone if "cat" in (p.first, p.second)) < 0.5
    stub = 'def integrated_gradients(model, x):\n    raise NotImplementedError("x")\n'
    pairs, short = similar_pairs({"d": stub, "e": stub}, base=stub, keep=keep)
    assert pairs == [] and short == ["d", "e"]  # the released stub is no evidence


def test_gradescope_results_one_test_per_check(tmp_path, toy):
    private = tmp_path / "private.py"
    private.write_text("from deepscope.grading import Call, Check, Fail\n"
                       "def _b(ctx):\n    def judge(outs):\n        raise Fail('secret')\n"
                       "    return [Call(ctx.randn(3, seed=1))], judge\n"
                       "CHECKS = {'norm': [Check('private one', 1, _b)]}\n")
    report = grade(toy.write(tmp_path, toy.SOLUTION), toy.ASSIGNMENT, private_checks=[private])
    data = results(report)
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert [(t["number"], t["score"], t["max_score"], t["status"], t["visibility"])
            for t in data["tests"]] == [("1.1", 2.0, 2.0, "passed", "visible"),
                                       ("1.2", 1.0, 1.0, "passed", "visible"),
                                       ("2.1", 1.0, 1.0, "passed", "visible"),
                                       ("2.2", 0.0, 1.0, "failed", "after_published")]
    assert data["score"] == 4.0 == sum(t["score"] for t in data["tests"])
    assert "secret" in data["tests"][3]["output"]
    jsonschema.validate([data["extra_data"]], REPORT_SCHEMA)


def _autograder(tmp_path, zip_path, submissions: dict[str, Path]):
    """Lay out /autograder in a temp dir from the zip, with setup.sh's stand-in: the zip's
    wheel installed (no dependencies, no network) into a folder the current environment
    imports first. Returns (root, environment)."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    for name in ("run_autograder", "setup.sh"):
        os.chmod(root / "source" / name, 0o755)
    (root / "run_autograder").write_bytes((root / "source" / "run_autograder").read_bytes())
    os.chmod(root / "run_autograder", 0o755)
    (root / "submission").mkdir()
    for name, path in submissions.items():
        (root / "submission" / name).write_bytes(path.read_bytes())
    wheel = next((root / "source").glob("deepscope-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(site), str(wheel)], check=True)
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), DEEPSCOPE_PYTHON=sys.executable,
               PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import deepscope; print(deepscope.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # graded by the wheel's code, not this checkout's
    return root, env


@pytest.mark.slow
def test_gradescope_autograder_zip_runs_on_a_sample_submission(tmp_path):
    zip_path = autograder_zip("01_saliency", tmp_path / "autograder.zip",
                              options=["--jobs 2", "--seed 5"])
    setup = zipfile.ZipFile(zip_path).read("setup.sh").decode()
    assert "--index-url https://download.pytorch.org/whl/cpu" in setup
    subprocess.run(["bash", "-n", "-c", setup], check=True)
    root, env = _autograder(tmp_path, zip_path, {
        "my_work.ipynb": ROOT / "instructor/01_saliency/assignment.ipynb"})
    done = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert data["score"] == 13.0 and len(data["tests"]) == sum(
        len(q.checks) for q in load_assignment("01_saliency").questions)
    assert all(t["status"] == "passed" for t in data["tests"])
    jsonschema.validate([data["extra_data"]], REPORT_SCHEMA)
    assert data["extra_data"]["seed"] == 5
    (root / "submission" / "second.ipynb").write_text("{}")  # two notebooks: refused, explained
    done = subprocess.run([str(root / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    data = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert done.returncode == 0 and data["score"] == 0 and "exactly one notebook" in data["output"]


def test_nbgrader_source_marks_solutions_and_adds_one_grade_cell_per_question():
    assignment = load_assignment("03_contrastive_geometry")
    master = nbformat.read(ROOT / assignment.master, as_version=4)
    nb = nbgrader_source(master, assignment)
    nbformat.validate(nb)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    solutions = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert [c.metadata.nbgrader["grade_id"] for c in graded] == [
        f"grade-{q.function}" for q in assignment.questions]
    assert [c.metadata.nbgrader["points"] for c in graded] == [q.points for q in
                                                                assignment.questions]
    assert all(c.metadata.nbgrader["locked"] and not c.metadata.nbgrader["solution"]
               for c in graded)
    assert len(solutions) == len(assignment.questions)
    assert all("### BEGIN SOLUTION" in c.source for c in solutions)
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    assert "grade_question('03_contrastive_geometry', 'info_nce')" in graded[0].source
    assert "nbgrader" not in master.cells[5].metadata  # the master is left alone


def test_gradescope_mode_explains_a_submission_it_cannot_grade(tmp_path, toy):
    folder = tmp_path / "submission"
    folder.mkdir()
    out = tmp_path / "results" / "results.json"
    assert cli.main(["grade", str(folder), "--assignment", TOY, "--gradescope", str(out)]) == 1
    data = json.loads(out.read_text())
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert data["score"] == 0 and "no .ipynb file" in data["output"]
    toy.write(folder, toy.SOLUTION, name="a.ipynb")
    assert cli.main(["grade", str(folder), "--assignment", TOY, "--gradescope", str(out)]) == 0
    data = json.loads(out.read_text())
    jsonschema.validate(data, GRADESCOPE_SCHEMA)
    assert data["score"] == 4.0 and data["extra_data"]["id"] == "a"


def test_grade_question_grades_what_an_ipython_kernel_ran(toy, capsys):
    """nbgrader's grade cells: the kernel's input history (magics included) is the notebook."""
    from deepscope.grading.nbgrader import grade_question
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        for source in ["%load_ext autoreload", toy.SOLUTION["softmax"],
                       "def norm(x):\n    return 0.0\n"]:
            shell.run_cell(source, store_history=True)
        assert grade_question(TOY, "softmax", seed=1) == 3.0
        assert grade_question(TOY, "norm", seed=1) == 0.0
    finally:
        InteractiveShell.clear_instance()
    out = capsys.readouterr()
    assert "softmax" in out.out and "3 / 3" in out.out and out.err == ""
    with pytest.raises(RuntimeError, match="inside a Jupyter kernel"):
        grade_question(TOY, "softmax")


def test_similarity_report_of_a_folder(tmp_path, toy):
    copied = ("def softmax(x):\n    shifted = x - x.max(dim=-1, keepdim=True).values  # stable\n"
              "    ex = shifted.exp()\n\n    return ex / ex.sum(dim=-1, keepdim=True)\n")
    toy.write(tmp_path, toy.SOLUTION, name="ann.ipynb")
    toy.write(tmp_path, {**toy.SOLUTION, "softmax": copied}, name="ben.ipynb")
    out = tmp_path / "similar.md"
    assert cli.main(["grade", str(tmp_path), "--assignment", TOY, "--quiet", "--similarity",
                     str(out), "--similarity-threshold", "0.9"]) == 0
    text = out.read_text()
    assert "evidence for a human to weigh, not a verdict" in text
    assert "| ann | ben | 1.00 |" in text  # softmax: the disguised copy
    assert "Too short to compare (2): ann, ben" in text  # norm: a one-liner
