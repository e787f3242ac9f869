"""A small assignment used to test the grading machinery without any chapter library."""

from __future__ import annotations

import nbformat
import torch
from deepscope.grading import (
    Assignment,
    Call,
    Check,
    Question,
    expect_close,
    expect_number_close,
    expect_tensor,
)


def _softmax_reference(ctx):
    x = ctx.randn(5, 7, seed=1)
    want = torch.softmax(x, dim=-1)

    def judge(outs):
        expect_close(expect_tensor(outs[0], "softmax(x)", like=x), want, "softmax(x)")

    return [Call(x)], judge


def _softmax_stable(ctx):
    x = ctx.randn(3, 4, seed=2, dtype=torch.float64) * 1000
    want = torch.softmax(x, dim=-1)

    def judge(outs):
        y = expect_tensor(outs[0], "softmax(1000 x)", like=x)
        expect_close(y, want, "softmax(1000 x)", rtol=1e-9, atol=1e-12)

    return [Call(x)], judge


def _norm_value(ctx):
    x = ctx.randn(10, seed=3)

    def judge(outs):
        expect_number_close(outs[0], float(x.norm()), "norm(x)")

    return [Call(x), Call(x)], judge


SOFTMAX = Question("softmax", "Softmax over the last dimension", [
    Check("agrees with torch.softmax", 2, _softmax_reference),
    Check("is stable for large inputs, keeps float64", 1, _softmax_stable,
          hint="subtract the row maximum before exponentiating"),
])
NORM = Question("norm", "Euclidean norm", [Check("equals the 2-norm", 1, _norm_value)])
ASSIGNMENT = Assignment("toy", "A toy assignment", [SOFTMAX, NORM])

SOLUTION = {
    "softmax": """def softmax(x):
    z = x - x.max(dim=-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(dim=-1, keepdim=True)
""",
    "norm": """def norm(x):
    return float((x ** 2).sum().sqrt())
""",
}


def notebook(sources: dict[str, str], tagged: bool = True) -> nbformat.NotebookNode:
    """A notebook with a title, an untagged setup cell and one answer cell per source."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# Toy"))
    nb.cells.append(nbformat.v4.new_code_cell("import torch\nimport deepscope"))
    for source in sources.values():
        cell = nbformat.v4.new_code_cell(source)
        if tagged:
            cell.metadata["tags"] = ["answer"]
        nb.cells.append(cell)
    return nb


def write(tmp_path, sources: dict[str, str], name: str = "sub.ipynb", **kw) -> str:
    path = tmp_path / name
    nbformat.write(notebook(sources, **kw), path)
    return str(path)
