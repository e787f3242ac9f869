import json
from pathlib import Path

import nbformat
import pytest
from deepscope.grading import NotebookError, release, release_notebook, release_text
from deepscope.grading.notebook import (
    Cell,
    _analyse,
    cells_for,
    code_cells,
    python_source,
    read_notebook,
    strip_solutions,
)


def _cell(source, number=1):
    return _analyse(Cell(number, python_source(source)))


def test_python_source_transforms_ipython_lines_and_keeps_line_numbers():
    src = "%matplotlib inline\nx = 1\n!pip install foo\ndef f():\n    %time g()\n    return x\nf?\n"
    out = python_source(src)
    assert len(out.splitlines()) == len(src.splitlines())
    compile(out, "<cell>", "exec")
    assert out.splitlines()[4] == "    get_ipython().run_line_magic('time', 'g()')"
    assert out.splitlines()[6] == "get_ipython().run_line_magic('pinfo', 'f')"


def test_analyse_finds_bound_names_and_global_references():
    c = _cell("import torch as T\nfrom math import pi\nA, B = 1, 2\n"
              "def f(x, y=helper):\n    z = x + CONST\n"
              "    return [w for w in range(3) if w > limit]\n"
              "class K: pass\nfor i in range(2): pass\n")
    assert c.defines == {"T", "pi", "A", "B", "f", "K", "i"}
    assert c.uses == {"helper", "CONST", "limit"}  # locals and builtins excluded
    assert _cell("def f(:\n").syntax_error.startswith("SyntaxError")


def test_cells_for_follows_dependencies_only():
    cells = [_cell("def helper(x):\n    return x + 1\n", 3),
             _cell("def f(x):\n    return helper(x) * SCALE\n", 5),
             _cell("SCALE = 2\n", 6),
             _cell("def g(x):\n    while True: pass\n", 8),
             _cell("import numpy as np\ndef h(x):\n    return np.sum(x)\n", 9)]
    chosen, problem = cells_for(cells, "f", provided={"torch"})
    assert problem == "" and [c.number for c in chosen] == [3, 5, 6]
    chosen, _ = cells_for(cells, "h", provided={"np"})
    assert [c.number for c in chosen] == [9]
    assert cells_for(cells, "nope", set())[1] == "no cell defines a function named 'nope'"
    broken = [_cell("def f(x)\n    return x\n", 4)]
    assert "the cell defining f (cell 4) does not compile" in cells_for(broken, "f", set())[1]


def test_code_cells_uses_answer_tags_or_every_code_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(["def f():\n", "    pass\n"])]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    cells, tagged = code_cells(read_notebook(path))
    assert not tagged and [c.number for c in cells] == [2, 3]
    assert cells[1].source == "def f():\n    pass\n" and cells[1].defines == {"f"}
    nb.cells[2].metadata["tags"] = ["answer", 3]
    nbformat.write(nb, path)
    cells, tagged = code_cells(read_notebook(path))
    assert tagged and [c.number for c in cells] == [2, 3]  # untagged cells are candidates too
    assert [c.tagged for c in cells] == [False, True]


def test_strip_solutions_code_and_markdown():
    src = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
           "    ### END SOLUTION\n\nX = 3\n")
    out, blocks = strip_solutions(src)
    assert blocks == 1 and "y = x + 1" not in out and "X = 3" in out
    assert '    raise NotImplementedError("f: replace this line with your code")' in out
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="f: replace"):
        ns["f"](1)
    md, n = strip_solutions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "markdown")
    assert n == 1 and md == "Why?\nYOUR ANSWER HERE"
    for bad, msg in [("### BEGIN SOLUTION\n### BEGIN SOLUTION\n", "nested"),
                     ("### END SOLUTION\n", "without"),
                     ("### BEGIN SOLUTION\nx\n", "never closed")]:
        with pytest.raises(NotebookError, match=msg):
            strip_solutions(bad, where="cell 2")


def _master():
    nb = nbformat.v4.new_notebook()
    answer = nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n"
                                       "    ### END SOLUTION\n")
    answer.metadata["tags"] = ["answer"]
    answer.metadata["collapsed"] = True
    answer.outputs = [nbformat.v4.new_output("stream", text="hi")]
    answer.execution_count = 3
    nb.cells = [nbformat.v4.new_markdown_cell("# A"), answer]
    nb.metadata["widgets"] = {"x": 1}
    return nb


def test_release_notebook_strips_solutions_outputs_and_metadata(tmp_path):
    master = _master()
    student = release_notebook(master)
    cell = student.cells[1]
    assert "return x" not in cell.source and cell.outputs == [] and cell.execution_count is None
    assert cell.metadata == {"tags": ["answer"]} and cell.id == master.cells[1].id
    assert set(student.metadata) == {"kernelspec", "language_info"}
    assert "return x" in master.cells[1].source  # the master is left alone
    path = tmp_path / "master.ipynb"
    nbformat.write(master, path)
    out = release(path, tmp_path / "sub" / "student.ipynb")
    assert out.read_text() == release_text(path)
    assert json.loads(out.read_text())["cells"][1]["metadata"] == {"tags": ["answer"]}


def test_release_is_stable_under_the_repository_strip_tool(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from tools.notebooks import clean

    path = tmp_path / "master.ipynb"
    nbformat.write(_master(), path)
    text = release_text(path)
    assert nbformat.writes(clean(nbformat.reads(text, as_version=4))) + "\n" == text


def test_release_refuses_untagged_or_empty_masters():
    master = _master()
    master.cells[1].metadata["tags"] = []
    with pytest.raises(NotebookError, match="cell 2 holds a solution but is not tagged 'answer'"):
        release_notebook(master)
    master.cells[1].source = "def f(x):\n    return x\n"
    with pytest.raises(NotebookError, match="holds no ### BEGIN SOLUTION block"):
        release_notebook(master)


def test_read_notebook_errors(tmp_path):
    with pytest.raises(NotebookError, match="no such notebook"):
        read_notebook(tmp_path / "missing.ipynb")
    bad = tmp_path / "bad.ipynb"
    for text in ("{not json", "[]", '{"nbformat": 3, "worksheets": []}', '{"cells": [1]}',
                 '{"cells": [{"source": "x"}]}'):
        bad.write_text(text)
        with pytest.raises(NotebookError, match="is not a readable notebook"):
            read_notebook(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(NotebookError, match="is not a readable notebook"):
        read_notebook(bad)


def test_cells_become_python_as_ipython_makes_them():
    from deepscope.grading.notebook import SHELL_SHIM

    continuation = "def f(a, b):\n    return (a\n            % b)\n"
    assert python_source(continuation) == continuation  # a modulo, not a magic
    timed = python_source("%%time\ndef g(x):\n    y = %time x + 1\n    return y\n")
    assert timed.startswith("# %%time") and "def g(x):" in timed
    assert python_source("%%bash\necho hi\n") == "# %%bash\n# echo hi\n"
    namespace = {}
    exec(SHELL_SHIM, namespace)
    exec(timed + python_source("listing = !ls\nz = g(2)\n%matplotlib inline\n"), namespace)
    assert namespace["z"] == 3 and namespace["listing"] == []
    cell = _cell("if True:\n    def h():\n        pass\ntry:\n    import numpy as npx\n"
                 "except ImportError as err:\n    def k():\n        pass\n")
    assert {"h", "npx", "err", "k"} <= cell.defines


def test_the_last_definition_wins_and_a_broken_last_attempt_is_reported():
    stub = _cell("def f(x):\n    raise NotImplementedError\n", 3)
    solution = _cell("def f(x):\n    return helper(x)\n", 7)
    helper = _cell("def helper(x):\n    return x\n", 9)
    chosen, problem = cells_for([stub, solution, helper], "f", set())
    assert problem == "" and [c.number for c in chosen] == [3, 7, 9]
    broken = _cell("def f(x)\n    return 2 * x\n", 11)
    assert "the cell defining f (cell 11) does not compile" in cells_for(
        [stub, solution, helper, broken], "f", set())[1]
