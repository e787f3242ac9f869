"""Notebooks of an assignment: the answer cells a grader runs, and the student copy of a master.

Conventions (nbgrader's markers, plain cell tags so any Jupyter front end keeps them):

- An *answer cell* is a code cell tagged ``answer``. The student writes the graded functions there.
  A teacher's master holds the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
  `release_notebook` replaces each such block with a stub that raises ``NotImplementedError``.
- Cells that call a graded function to try it are tagged ``raises-exception``, so nbval and
  nbclient run the student copy to the end while the stubs still raise.

For grading, each question runs only the cells it needs: every code cell that defines its
function (in notebook order, so the last definition wins, as when the notebook is run from the
top: a solution written in a new, untagged cell below the stub counts) and, transitively, the
cells defining the names those cells use (`cells_for`). So a crash, a hang or an ``exit()`` at
the top level of one cell costs only the questions whose functions live in it or depend on it.

Cells become Python the way IPython makes them Python (`python_source`, with IPython's own
``TransformerManager``): ``%magic``, ``!shell`` and ``name?`` become calls of ``get_ipython()``,
which the grader provides as a shell that does nothing (`SHELL_SHIM`), and a PEP 8 continuation
line that starts with ``%`` inside parentheses stays the modulo it is.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import symtable
from dataclasses import dataclass, field
from pathlib import Path

ANSWER_TAG = "answer"
BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE = {"name": "python", "pygments_lexer": "ipython3"}
_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__builtins__"}


class NotebookError(ValueError):
    """A notebook that cannot be read, or a master whose solution markers do not pair up."""


@dataclass
class Cell:
    """A code cell as the grader sees it: its number in the notebook (1-based, all cells
    counted), its source as plain Python (`python_source`), the names it binds and uses, and
    whether it is tagged ``answer``."""

    number: int
    source: str
    defines: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    syntax_error: str | None = None
    tagged: bool = True


def read_notebook(path: str | Path) -> dict:
    """Read a notebook file (nbformat 4) as plain JSON, with every cell's source as one string.

    Raises `NotebookError` with a readable reason. (Plain ``json``, not nbformat: a submission
    needs no schema validation to be graded, and nbformat takes seconds to import.)
    """
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise NotebookError(f"no such notebook: {path}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NotebookError(f"{path} is not a readable notebook: {err}") from err
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list) or nb.get("nbformat", 4) < 4:
        raise NotebookError(f"{path} is not a readable notebook: expected nbformat 4 JSON with a "
                            "list of cells")
    for cell in cells:
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise NotebookError(f"{path} is not a readable notebook: a cell has no cell_type")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(part) for part in source)
        cell["source"] = str(source)
        tags = cell.get("metadata", {}).get("tags", []) if isinstance(cell.get("metadata"),
                                                                      dict) else []
        cell["tags"] = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    return nb


#: Cell magics whose body is Python: the grader runs the body (once) as plain Python.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})

#: What ``get_ipython()`` and ``display`` are while grading (executed before the answer cells):
#: magics and shell commands do nothing, except that ``%time``, ``%timeit`` and ``%prun`` run
#: their statement once (so ``y = %time f(x)`` still computes ``f(x)``).
SHELL_SHIM = '''
class _GraderShell:
    """IPython's shell as the grader provides it: magics and shell commands do nothing."""

    def run_line_magic(self, name, line, _stack_depth=1):
        import re as _re
        import sys as _sys
        if name not in ("time", "timeit", "prun"):
            return None
        statement = _re.sub(r"^(\\s*-[A-Za-z]+(\\s+[0-9]+)?)*\\s*", "", line)
        frame = _sys._getframe(1)
        try:
            code = compile(statement, "<%" + name + ">", "eval")
        except SyntaxError:
            exec(compile(statement, "<%" + name + ">", "exec"), frame.f_globals, frame.f_locals)
            return None
        value = eval(code, frame.f_globals, frame.f_locals)
        return value if name == "time" else None

    def run_cell_magic(self, name, line, cell):
        return None

    def system(self, command):
        return None

    def getoutput(self, command, split=True, depth=0):
        return []

    def magic(self, line):
        return None


_GRADER_SHELL = _GraderShell()


def get_ipython():
    return _GRADER_SHELL


def display(*objects, **kwargs):
    return None
'''


def _ipython_transform(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - leave it to the compiler to say what is wrong
        return source if source.endswith("\n") else source + "\n"


def python_source(source: str) -> str:
    """Return a cell's source as plain Python, transformed as IPython transforms it.

    Line magics, shell escapes and help requests become calls of ``get_ipython()`` (see
    `SHELL_SHIM`), with line numbers kept, so tracebacks point at the right line. A cell magic
    whose body is Python (``%%time``, ``%%capture``, ...) keeps its body as Python; any other
    cell magic (``%%bash``, ``%%html``, ...) is not Python, and the cell is commented out.
    """
    if source.startswith("%%"):
        first, _, body = source.partition("\n")
        name = first[2:].split()[0] if first[2:].split() else ""
        if name in PYTHON_CELL_MAGICS:
            return f"# {first}  (the grader runs the body as plain Python)\n" + (
                _ipython_transform(body) if body.strip() else "")
        return "".join(f"# {line}\n" for line in source.splitlines())
    return _ipython_transform(source)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _bound_names(body: list) -> set[str]:
    """Names a list of module-level statements binds, in compound statements too (a ``def``
    inside an ``if`` or a ``try`` counts), without looking into function or class bodies."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
            continue
        todo = [node]
        while todo:
            sub = todo.pop()
            for child in ast.iter_child_nodes(sub):
                if isinstance(child, ast.stmt):
                    names |= _bound_names([child])
                elif isinstance(child, ast.excepthandler):
                    names |= ({child.name} if child.name else set()) | _bound_names(child.body)
                elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                    names.add(child.id)
                elif not isinstance(child, _SCOPES):
                    todo.append(child)
    return names


def _analyse(cell: Cell) -> Cell:
    try:
        tree = ast.parse(cell.source)
        table = symtable.symtable(cell.source, "<cell>", "exec")
    except SyntaxError as err:
        cell.syntax_error = f"SyntaxError: {err.msg} (line {err.lineno})"
        return cell
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        cell.syntax_error = f"{type(err).__name__}: the cell cannot be parsed"
        return cell
    try:
        cell.defines = _bound_names(tree.body)
    except RecursionError:
        cell.syntax_error = "RecursionError: the cell cannot be parsed"
        return cell
    cell.uses = _global_references(table) - _BUILTINS
    return cell


def _global_references(table: symtable.SymbolTable) -> set[str]:
    """Names a cell reads from the notebook's global namespace, in any nested scope."""
    names = set()
    for symbol in table.get_symbols():
        if symbol.is_referenced() and (table.get_type() == "module" or symbol.is_global()):
            names.add(symbol.get_name())
    for child in table.get_children():
        names |= _global_references(child)
    return names


def code_cells(nb: dict) -> tuple[list[Cell], bool]:
    """Return every code cell of a notebook (analysed) and whether any cell is tagged ``answer``.

    All code cells are candidates, tagged or not (a student may write a solution in a new cell);
    `cells_for` picks only the cells a question needs, so the notebook's set-up and try-it cells
    run only if an answer uses a name they define.
    """
    tagged = any(ANSWER_TAG in c["tags"] for c in nb["cells"] if c["cell_type"] == "code")
    cells = []
    for number, cell in enumerate(nb["cells"], start=1):
        if cell["cell_type"] != "code":
            continue
        cells.append(_analyse(Cell(number=number, source=python_source(cell["source"]),
                                   tagged=ANSWER_TAG in cell["tags"])))
    return cells, tagged


def cells_for(cells: list[Cell], function: str, provided: set[str]) -> tuple[list[Cell], str]:
    """Select the cells a question needs, in notebook order.

    Args:
        cells: the analysed code cells (`code_cells`).
        function: the graded function's name.
        provided: names the preamble already binds (torch, np, F, ...).

    Returns:
        ``(cells, problem)``: every cell that defines ``function`` and, transitively, the cells
        defining the names those cells use; ``problem`` is "" or says why the function cannot
        be found (also when the last cell that tries to define it does not compile: that is
        the student's latest attempt, and grading an older definition would mislead).
    """
    definers: dict[str, list[Cell]] = {}
    for cell in cells:
        for name in cell.defines:
            definers.setdefault(name, []).append(cell)
    last_good = max((c.number for c in definers.get(function, [])), default=0)
    broken = [c for c in cells if c.syntax_error and c.number > last_good
              and re.search(rf"\bdef\s+{re.escape(function)}\b", c.source)]
    if broken:
        return [], (f"the cell defining {function} (cell {broken[-1].number}) does not compile: "
                    f"{broken[-1].syntax_error}")
    if function not in definers:
        return [], f"no cell defines a function named {function!r}"
    chosen: dict[int, Cell] = {}
    todo = [function]
    seen = set(provided)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for cell in definers.get(name, []):
            if cell.number not in chosen:
                chosen[cell.number] = cell
                todo.extend(cell.uses)
    return [chosen[n] for n in sorted(chosen)], ""


# ---------------------------------------------------------------------------------------------
# Student copies


def clean(nb):
    """Strip outputs and execution counts and keep only cell tags (the repository's format)."""
    import nbformat

    nb.metadata = nbformat.from_dict({"kernelspec": KERNELSPEC, "language_info": LANGUAGE})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        keep = {k: v for k, v in cell.metadata.items() if k == "tags"}
        cell.metadata = nbformat.from_dict(keep)
    return nb


def _enclosing_function(lines: list[str], index: int, indent: int) -> str | None:
    for line in reversed(lines[:index]):
        match = re.match(r"(\s*)(?:async\s+)?def\s+(\w+)", line)
        if match and len(match.group(1)) < indent:
            return match.group(2)
    return None


def strip_solutions(source: str, cell_type: str = "code", where: str = "") -> tuple[str, int]:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block; return the new source
    and the number of blocks. Code blocks become a stub that raises ``NotImplementedError``;
    markdown blocks become "YOUR ANSWER HERE"."""
    lines = source.splitlines()
    out: list[str] = []
    begin = None
    blocks = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(BEGIN_SOLUTION):
            if begin is not None:
                raise NotebookError(f"{where}: nested {BEGIN_SOLUTION} at line {index + 1}")
            begin = index
            indent = line[: len(line) - len(line.lstrip())]
            if cell_type == "code":
                name = _enclosing_function(lines, index, len(indent))
                what = f"{name}: " if name else ""
                out.append(f"{indent}# YOUR CODE HERE")
                out.append(f'{indent}raise NotImplementedError("{what}replace this line with your '
                           'code")')
            else:
                out.append(f"{indent}YOUR ANSWER HERE")
        elif stripped.startswith(END_SOLUTION):
            if begin is None:
                raise NotebookError(f"{where}: {END_SOLUTION} without {BEGIN_SOLUTION} at line "
                                    f"{index + 1}")
            begin = None
            blocks += 1
        elif begin is None:
            out.append(line)
    if begin is not None:
        raise NotebookError(f"{where}: {BEGIN_SOLUTION} at line {begin + 1} is never closed")
    return "\n".join(out), blocks


def release_notebook(master):
    """Return the student copy of a master: solutions replaced by stubs, outputs stripped.

    Args:
        master: an ``nbformat.NotebookNode`` (version 4); it is not modified.

    Raises `NotebookError` when markers do not pair up, when a code cell holding a solution is
    not tagged ``answer`` (the grader would not find it), or when the master has no solution.
    """
    import nbformat

    student = nbformat.from_dict(master)
    total = 0
    for number, cell in enumerate(student.cells, start=1):
        where = f"cell {number}"
        source, blocks = strip_solutions(cell.source, cell.cell_type, where)
        if blocks and cell.cell_type == "code" and ANSWER_TAG not in cell.metadata.get("tags", []):
            raise NotebookError(f"{where} holds a solution but is not tagged {ANSWER_TAG!r}")
        cell.source = source
        total += blocks
    if total == 0:
        raise NotebookError(f"the master holds no {BEGIN_SOLUTION} block")
    return clean(student)


def release_text(master_path: str | Path) -> str:
    """Return the student copy of the master at ``master_path`` as notebook JSON text."""
    import nbformat

    read_notebook(master_path)  # readable errors for a missing or broken file
    master = nbformat.read(Path(master_path), as_version=4)
    return nbformat.writes(release_notebook(master)) + "\n"


def release(master_path: str | Path, student_path: str | Path) -> Path:
    """Write the student copy of a master notebook; return the student path."""
    text = release_text(master_path)
    student_path = Path(student_path)
    student_path.parent.mkdir(parents=True, exist_ok=True)
    student_path.write_text(text)
    return student_path
