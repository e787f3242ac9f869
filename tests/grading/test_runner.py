"""grade(): points, failure messages, isolation between questions, private checks, reports."""

import json

import nbformat
import pytest
import torch
from deepscope.grading import (
    Call,
    Check,
    Fail,
    GradingError,
    Question,
    expect_close,
    expect_number_close,
    expect_scalar,
    expect_tensor,
    grade,
    gradebook_csv,
    load_assignment,
)
from deepscope.grading.runner import detect_assignment, with_private_checks

from .conftest import TOY

STUB = {"softmax": "def softmax(x):\n    raise NotImplementedError\n",
        "norm": "def norm(x):\n    raise NotImplementedError\n"}


def test_solution_scores_full_marks_and_stub_scores_zero(tmp_path, toy):
    report = grade(toy.write(tmp_path, toy.SOLUTION), toy.ASSIGNMENT)
    assert (report.points, report.max_points) == (4.0, 4.0) and report.error == ""
    assert all(c.passed for q in report.questions for c in q.checks)
    report = grade(toy.write(tmp_path, STUB, name="stub.ipynb"), toy.ASSIGNMENT)
    assert report.points == 0.0 and report.max_points == 4.0
    assert all(c.message.startswith("not implemented yet") for q in report.questions
               for c in q.checks)
    assert "Hint" not in report.table()


def test_a_wrong_answer_loses_exactly_the_failed_checks_points(tmp_path, toy):
    naive = {**toy.SOLUTION, "softmax": "def softmax(x):\n    e = x.exp()\n"
             "    return e / e.sum(dim=-1, keepdim=True)\n"}
    report = grade(toy.write(tmp_path, naive), toy.ASSIGNMENT)
    softmax, norm = report.questions
    assert softmax.points == 2.0 and norm.points == 1.0
    failed = [c for c in softmax.checks if not c.passed]
    assert len(failed) == 1 and "NaN or infinite" in failed[0].message
    assert "Hint: subtract the row maximum" in failed[0].message
    table = report.table()
    assert "FAILED is stable for large inputs" in table and "3 / 4" in table


def test_dtype_and_shape_failures_say_what_was_expected(tmp_path, toy):
    wrong = {**toy.SOLUTION, "softmax": "def softmax(x):\n    return torch.softmax(x.float(), -1)"
             "\n"}
    report = grade(toy.write(tmp_path, wrong), toy.ASSIGNMENT, questions=["softmax"])
    assert [q.function for q in report.questions] == ["softmax"]
    message = report.questions[0].checks[1].message
    assert "should keep the input's dtype torch.float64, got torch.float32" in message


def test_hanging_and_crashing_questions_cost_only_their_points(tmp_path, toy):
    import time

    bad = {"softmax": "import os\ndef softmax(x):\n    os._exit(1)\n",
           "norm": "def norm(x):\n    while True:\n        pass\n"}
    start = time.perf_counter()
    report = grade(toy.write(tmp_path, bad), toy.ASSIGNMENT, time_limit=2)
    assert time.perf_counter() - start < 2 + 10
    softmax, norm = report.questions
    assert softmax.points == 0 and "the process ended early (exit code 1)" in softmax.problem
    assert norm.points == 0 and norm.problem.startswith("timed out after 2 s while calling norm")
    top_level = {**toy.SOLUTION, "norm": "import os\nos._exit(3)\n" + toy.SOLUTION["norm"]}
    report = grade(toy.write(tmp_path, top_level, name="b.ipynb"), toy.ASSIGNMENT)
    assert report.questions[0].points == 3.0 and report.questions[1].points == 0.0
    assert "running answer cell 4 at its top level" in report.questions[1].problem


def test_patching_torch_in_the_submission_changes_nothing_in_the_grader(tmp_path, toy):
    tamper = {**toy.SOLUTION, "softmax": (
        "torch.allclose = lambda *a, **k: True\n"
        "torch.Tensor.__sub__ = lambda a, b: torch.zeros_like(a)\n"
        "torch.Tensor.abs = lambda a: torch.zeros_like(a)\n"
        "import sys\nsys.modules['torch'].isfinite = lambda a: torch.ones_like(a, dtype=bool)\n"
        "def softmax(x):\n    return torch.zeros_like(x)\n")}
    report = grade(toy.write(tmp_path, tamper), toy.ASSIGNMENT)
    assert report.questions[0].points == 0.0 and report.questions[1].points == 1.0
    assert torch.allclose(torch.zeros(1), torch.ones(1)) is False
    assert report.warnings == []


def test_copying_the_reference_is_refused(tmp_path, toy):
    copy = {**toy.SOLUTION, "softmax": "def softmax(x):\n    from deepscope import contrastive\n"
            "    return torch.softmax(x, -1)\n"}
    report = grade(toy.write(tmp_path, copy), toy.ASSIGNMENT)
    assert report.questions[0].points == 0.0 and report.questions[1].points == 1.0
    message = report.questions[0].checks[0].message
    assert "No module named 'deepscope'" in message and "implement it yourself" in message


def test_missing_functions_syntax_errors_and_top_level_notes(tmp_path, toy):
    sources = {"softmax": "def softmax(x)\n    return x\n",
               "norm": toy.SOLUTION["norm"] + "print(norm(undefined_demo))\n"}
    report = grade(toy.write(tmp_path, sources), toy.ASSIGNMENT)
    softmax, norm = report.questions
    assert "does not compile: SyntaxError" in softmax.problem and softmax.seconds == 0
    assert norm.points == 1.0 and "raised at its top level" in norm.warnings[0]
    assert "note: answer cell 4 raised" in report.table()
    report = grade(toy.write(tmp_path, {"x": "def other(x):\n    return x\n"}), toy.ASSIGNMENT)
    assert report.points == 0 and "no cell defines" in report.questions[0].problem


def test_untagged_notebooks_are_graded_with_a_warning(tmp_path, toy):
    report = grade(toy.write(tmp_path, toy.SOLUTION, tagged=False), toy.ASSIGNMENT)
    assert report.points == 4.0  # the setup cell `import deepscope` is never run
    assert "no cell is tagged 'answer'" in report.warnings[0]


def test_unreadable_notebook_gets_a_zero_report(tmp_path, toy):
    path = tmp_path / "broken.ipynb"
    path.write_text("{")
    report = grade(path, toy.ASSIGNMENT)
    assert report.error and report.points == 0 and report.max_points == 4.0
    assert "NOT GRADED" in report.table()
    report = grade(tmp_path / "missing.ipynb", toy.ASSIGNMENT)
    assert "no such notebook" in report.error


def test_assignment_from_a_file_detection_and_bad_ids(tmp_path, toy):
    assert load_assignment(TOY).id == "toy"
    assert detect_assignment({"softmax"}, [toy.ASSIGNMENT]) is toy.ASSIGNMENT
    with pytest.raises(GradingError, match="could not tell"):
        detect_assignment({"nothing"}, [toy.ASSIGNMENT])
    with pytest.raises(GradingError, match="matches both"):
        detect_assignment({"softmax"}, [toy.ASSIGNMENT, toy.ASSIGNMENT])
    with pytest.raises(GradingError, match="unknown assignment"):
        load_assignment("99_nothing")
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(GradingError, match="does not define ASSIGNMENT"):
        load_assignment(str(tmp_path / "empty.py"))
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(GradingError, match="failed to load"):
        load_assignment(str(tmp_path / "boom.py"))
    with pytest.raises(GradingError, match="no question"):
        grade(toy.write(tmp_path, toy.SOLUTION), toy.ASSIGNMENT, questions=["nope"])
    report = grade(toy.write(tmp_path, {"x": "y = 1\n"}))
    assert "could not tell which assignment" in report.error


PRIVATE = '''
import torch
from deepscope.grading import Call, Check, Question, expect_number_close

def _sum_of_probabilities(ctx):
    x = ctx.randn(2, 9, seed=11)
    def judge(outs):
        expect_number_close(outs[0].sum(), 2.0, "the total probability")
    return [Call(x)], judge

def _abs_sum(ctx):
    x = ctx.randn(4, seed=12)
    def judge(outs):
        expect_number_close(outs[0], float(x.abs().sum()), "abs_sum(x)")
    return [Call(x)], judge

CHECKS = {"softmax": [Check("rows sum to one (private)", 1, _sum_of_probabilities)]}
QUESTIONS = [Question("abs_sum", "Sum of absolute values", [Check("matches", 2, _abs_sum)])]
'''


def test_private_checks_extend_and_add_questions(tmp_path, toy):
    private = tmp_path / "private.py"
    private.write_text(PRIVATE)
    sources = {**toy.SOLUTION, "abs_sum": "def abs_sum(x):\n    return x.abs().sum()\n"}
    report = grade(toy.write(tmp_path, sources), toy.ASSIGNMENT, private_checks=[private])
    assert [q.function for q in report.questions] == ["softmax", "norm", "abs_sum"]
    assert report.points == report.max_points == 7.0
    assert len(toy.ASSIGNMENT.questions[0].checks) == 2  # the original is not modified
    for text, match in [("CHECKS = {'nope': []}", "has no question"),
                        ("CHECKS = {'softmax': [1]}", "must be a list of Check"),
                        ("QUESTIONS = [1]", "must hold Question"), ("X = 1", "defines neither"),
                        ("1/0", "failed to load")]:
        private.write_text(text)
        with pytest.raises(GradingError, match=match):
            with_private_checks(toy.ASSIGNMENT, [private])


def test_json_and_csv_reports(tmp_path, toy):
    report = grade(toy.write(tmp_path, toy.SOLUTION), toy.ASSIGNMENT, jobs=2)
    data = json.loads(report.to_json())
    assert data["format"] == 2 and data["points"] == data["max_points"] == 4.0
    assert data["assignment"] == "toy" and len(data["sha256"]) == 64
    assert data["questions"][0]["checks"][0] == {
        "name": "agrees with torch.softmax", "points": 2.0, "max_points": 2.0, "passed": True,
        "message": "", "private": False}
    assert data["sandbox"]["isolation"] in ("namespaces", "bubblewrap")
    csv = gradebook_csv([report, grade(tmp_path / "missing.ipynb", toy.ASSIGNMENT)])
    lines = csv.strip().splitlines()
    assert lines[0] == "id,submission,assignment,softmax,norm,total,max,error,isolation"
    assert lines[1].endswith(",toy,3,1,4,4,," + data["sandbox"]["isolation"])
    assert "no such notebook" in lines[2]


def test_judging_helpers():
    x = torch.zeros(2, 3)
    with pytest.raises(Fail, match="should be a torch.Tensor, got a NumPy array"):
        import numpy as np

        expect_tensor(np.zeros(2), "y")
    with pytest.raises(Fail, match=r"should have shape \(2, 3\), got \(3, 2\)"):
        expect_tensor(x.T, "y", like=x)
    with pytest.raises(Fail, match="should be on the input's device"):
        expect_tensor(x, "y", device="meta")
    with pytest.raises(Fail, match=r"at index \(1, 2\) you have 1 where 0 is expected"):
        y = x.clone()
        y[1, 2] = 1
        expect_close(y, x, "y")
    with pytest.raises(Fail, match="should have shape"):
        expect_close(x[0], x, "y")
    assert expect_scalar(torch.tensor([2.5]), "s") == 2.5
    import numpy as np

    assert expect_scalar(np.array(1.5), "s") == 1.5
    for bad in (True, "1", [1.0], torch.ones(2)):
        with pytest.raises(Fail, match="should be a number"):
            expect_scalar(bad, "s")
    with pytest.raises(Fail, match="is nan where about 1 is expected"):
        expect_number_close(float("nan"), 1.0, "s")
    assert expect_number_close(1.0 + 1e-9, 1.0, "s") == pytest.approx(1.0)


def test_a_judge_that_cannot_read_the_answer_fails_the_check(tmp_path, toy):
    def build(ctx):
        def judge(outs):
            return outs[0].no_such_attribute
        return [Call(torch.ones(1))], judge

    question = Question("softmax", "t", [Check("reads a key", 1, build)])
    assignment = type(toy.ASSIGNMENT)("t2", "t2", [question])
    report = grade(toy.write(tmp_path, toy.SOLUTION), assignment)
    assert "could not be checked: AttributeError" in report.questions[0].checks[0].message


def test_notebook_with_magics_still_grades(tmp_path, toy):
    nb = toy.notebook(toy.SOLUTION)
    nb.cells[2].source = "%load_ext autoreload\n" + nb.cells[2].source
    path = tmp_path / "magic.ipynb"
    nbformat.write(nb, path)
    assert grade(path, toy.ASSIGNMENT).points == 4.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_grading_on_cuda_checks_device_preservation(tmp_path, toy):
    report = grade(toy.write(tmp_path, toy.SOLUTION), toy.ASSIGNMENT, device="cuda")
    assert report.points == report.max_points == 4.0, report.table()
    assert report.device == "cuda" and "per process" not in report.sandbox["memory"]
    on_cpu = {**toy.SOLUTION, "softmax": "def softmax(x):\n    return torch.softmax(x.cpu(), -1)\n"}
    report = grade(toy.write(tmp_path, on_cpu, name="cpu.ipynb"), toy.ASSIGNMENT, device="cuda")
    assert report.questions[0].points == 0
    assert "should be on the input's device cuda:0" in report.questions[0].checks[0].message


def test_a_question_calling_another_graded_function_gets_a_correct_one(tmp_path, toy):
    def _squares(ctx):
        x = ctx.randn(5, seed=1)

        def judge(outs):
            expect_close(expect_tensor(outs[0], "square(x)", like=x), x**2, "square(x)")
        return [Call(x)], judge

    def _sum(ctx):
        x = ctx.randn(5, seed=2)

        def judge(outs):
            expect_number_close(outs[0], float((x**2).sum()), "sum_of_squares(x)", rtol=1e-5)
        return [Call(x)], judge

    questions = [Question("square", "x^2", [Check("squares", 1, _squares)]),
                 Question("sum_of_squares", "sum x^2", [Check("sums", 1, _sum)])]
    sources = {"square": "def square(x):\n    return x ** 3\n",
               "sum": "def sum_of_squares(x):\n    return square(x).sum()\n"}
    path = toy.write(tmp_path, sources)
    plain = type(toy.ASSIGNMENT)("sq", "sq", questions)
    assert [q.points for q in grade(path, plain).questions] == [0, 0]  # one mistake, twice
    fair = type(toy.ASSIGNMENT)("sq", "sq", questions,
                                substitutes={"square": "def square(x):\n    return x * x\n"})
    report = grade(path, fair)
    assert [q.points for q in report.questions] == [0, 1]
    assert "graded with a correct square in place of yours" in report.questions[1].warnings[0]
