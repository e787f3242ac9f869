"""Find the chapter notebooks that call a `deepscope.widgets` factory (no hand-kept list).

A notebook is a widget notebook when one of its code cells calls a name that resolves, through
the notebook's own imports, to ``deepscope.widgets.<name>`` (or ``deepscope.widgets.<sub>.<name>``)
with ``<name>`` in ``deepscope.widgets.__all__``. Cells are read as Python after IPython's own
transformer has turned magics into calls, so ``%matplotlib`` lines do not hide a cell.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "deepscope.widgets"


def exported_names() -> dict[str, str]:
    """Map each public name of `deepscope.widgets` to the submodule that defines it.

    The package's ``__all__`` when it has one, else the union of its submodules' ``__all__``
    (the package re-exports them with ``from .sub import *``). Submodules are found on disk, so
    one the package forgot to import still counts.
    """
    import importlib
    import pkgutil

    import deepscope.widgets as widgets

    names = {}
    for info in sorted(pkgutil.iter_modules(widgets.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        for name in getattr(module, "__all__", []):
            names.setdefault(name, module.__name__)
    if hasattr(widgets, "__all__"):
        names = {name: names.get(name, PACKAGE) for name in widgets.__all__}
    return names


def widget_factories() -> set[str]:
    """Names of the public callables of `deepscope.widgets` (the factories and `explorer`)."""
    import importlib

    return {name for name, module in exported_names().items()
            if callable(getattr(importlib.import_module(module), name, None))}


def _python_source(cell_source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell_source)


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The dotted path a call's function resolves to through ``names`` (or None)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    return ".".join([names[node.id], *reversed(parts)])


def _bind_imports(node: ast.AST, names: dict[str, str], factories: set[str]) -> None:
    """Record what an import statement binds, as fully qualified paths."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                names[alias.asname] = alias.name
            else:  # `import deepscope.widgets` binds `deepscope`
                top = alias.name.split(".")[0]
                names[top] = top
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for alias in node.names:
            if alias.name == "*":
                if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                    names.update({f: f"{PACKAGE}.{f}" for f in factories})
                continue
            names[alias.asname or alias.name] = f"{node.module}.{alias.name}"


def factory_calls(sources: list[str], factories: set[str]) -> list[str]:
    """Factories called by a sequence of code cells, in order of appearance (with repeats).

    Imports bind names for the cells after them, as they do in a kernel.
    """
    names: dict[str, str] = {}
    calls = []
    for source in sources:
        try:
            tree = ast.parse(_python_source(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):  # imports first: a cell may import and call
            _bind_imports(node, names, factories)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                path = _dotted(node.func, names)
                if path and path.startswith(PACKAGE + ".") and path.rsplit(".", 1)[1] in factories:
                    calls.append(path.rsplit(".", 1)[1])
    return calls


def code_cells(path: Path) -> list[str]:
    """The source of every code cell of a notebook file."""
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c.get("cell_type") == "code"]


def widget_notebooks(chapters: Path = ROOT / "chapters") -> dict[Path, list[str]]:
    """Map each chapter notebook that calls a widget factory to the factories it calls."""
    factories = widget_factories()
    found = {}
    for path in sorted(Path(chapters).rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        calls = factory_calls(code_cells(path), factories)
        if calls:
            found[path] = sorted(set(calls))
    return found
