"""Notebooks of an assignment: the answer cells a grader runs, and the student copy of a master.

Conventions (nbgrader's markers, plain cell tags so any Jupyter front end keeps them):

- An *answer cell* is a code cell tagged ``answer``. The student writes the graded functions there.
  A teacher's master holds the solution between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
  `release_notebook` replaces each such block with a stub that raises ``NotImplementedError``.
- Cells that call a graded function to try it are tagged ``raises-exception``, so nbval and
  nbclient run the student copy to the end while the stubs still raise.

For grading, each question runs only the answer cells it needs: the cell that defines its
function and, transitively, the answer cells defining the names that cell uses (`cells_for`).
So a crash, a hang or an ``exit()`` at the top level of one answer cell costs only the questions
whose functions live in it or depend on it.
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
    counted), its source with IPython magics blanked out, and the names it binds and uses."""

    number: int
    source: str
    defines: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    syntax_error: str | None = None


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


def python_source(source: str) -> str:
    """Blank out IPython-only lines (``%magic``, ``!shell``, ``%%cell``) so that the cell
    compiles as Python; line numbers are kept so tracebacks still point at the right line."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        help_line = stripped.endswith("?") and stripped.rstrip("?").isidentifier()
        if stripped.startswith(("%", "!")) or help_line:
            indent = line[: len(line) - len(stripped)]
            lines.append(f"{indent}pass  # IPython-only line skipped by the grader")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


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
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            cell.defines.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                cell.defines.add((alias.asname or alias.name).split(".")[0])
        else:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    cell.defines.add(sub.id)
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
    """Return the answer cells of a notebook (analysed) and whether any cell was tagged.

    Without a single ``answer`` tag (a front end that dropped tags, cells pasted into a new
    notebook) every code cell is a candidate; `cells_for` still picks only what a question needs.
    """
    tagged = any(ANSWER_TAG in c["tags"] for c in nb["cells"] if c["cell_type"] == "code")
    cells = []
    for number, cell in enumerate(nb["cells"], start=1):
        if cell["cell_type"] != "code" or (tagged and ANSWER_TAG not in cell["tags"]):
            continue
        cells.append(_analyse(Cell(number=number, source=python_source(cell["source"]))))
    return cells, tagged


def cells_for(cells: list[Cell], function: str, provided: set[str]) -> tuple[list[Cell], str]:
    """Select the answer cells a question needs, in notebook order.

    Args:
        cells: the analysed answer cells (`code_cells`).
        function: the graded function's name.
        provided: names the preamble already binds (torch, np, F, ...).

    Returns:
        ``(cells, problem)``: the cells that define ``function`` and, transitively, the names those
        cells use; ``problem`` is "" or says why the function cannot be found.
    """
    definers: dict[str, list[Cell]] = {}
    for cell in cells:
        for name in cell.defines:
            definers.setdefault(name, []).append(cell)
    if function not in definers:
        broken = [c for c in cells if c.syntax_error and re.search(rf"\bdef\s+{function}\b",
                                                                   c.source)]
        if broken:
            return [], (f"the cell defining {function} (cell {broken[0].number}) does not compile: "
                        f"{broken[0].syntax_error}")
        return [], f"no answer cell defines a function named {function!r}"
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
