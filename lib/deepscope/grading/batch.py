"""A teacher's batch: which notebooks a ``deepscope grade`` command line names, and the student
id of each.

    deepscope grade submissions/01_saliency --id stem        # alice.ipynb -> alice
    deepscope grade submissions/01_saliency --id parent      # alice/assignment.ipynb -> alice

A folder stands for every ``*.ipynb`` below it (sorted, Jupyter's ``.ipynb_checkpoints`` and
hidden folders skipped); a file stands for itself, whatever its name. Ids must be unique: two
submissions with one id would overwrite each other's row and feedback file, so that is refused
before anything is graded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

ID_MODES = ("stem", "parent")


class BatchError(ValueError):
    """The command line names no notebook, or two submissions would get the same id."""


def collect(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the notebooks below them; keep files as given (in order, once)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            below = sorted(p for p in path.rglob("*.ipynb") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
            if not below:
                raise BatchError(f"{path} is a folder with no .ipynb file below it")
            found.extend(below)
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise BatchError("no submission was named")
    return unique


def student_ids(paths: Sequence[Path], mode: str = "stem") -> list[str]:
    """Return each submission's id: its file name without ``.ipynb`` (``stem``) or the name of
    its folder (``parent``). Raises `BatchError` when two submissions share an id."""
    if mode not in ID_MODES:
        raise BatchError(f"--id must be one of {', '.join(ID_MODES)}, got {mode!r}")
    ids = [(Path(p).stem if mode == "stem" else Path(p).resolve().parent.name) for p in paths]
    seen: dict[str, Path] = {}
    for identifier, path in zip(ids, paths):
        if identifier in seen:
            other = "--id parent" if mode == "stem" else "--id stem"
            raise BatchError(f"{seen[identifier]} and {path} would both get the id "
                             f"{identifier!r}; rename one, or use {other}")
        seen[identifier] = path
    return ids


def safe_name(identifier: str) -> str:
    """A file name for a student id: letters, digits, '.', '_' and '-' kept, the rest '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).strip(".") or "submission"
    return name[:120]
