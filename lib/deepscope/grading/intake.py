"""Reading a submitted notebook: every way a file can be broken is a reason, never a crash.

A submission is a file a student made, possibly to crash the grader: not JSON, JSON nested
100,000 deep, ``"nbformat": "4"`` as a string, a source that is a number, a UTF-16 or
byte-order-marked file, binary garbage, a file of gigabytes, a named pipe or a device that never
ends, a cell whose expression is too deep to parse. `read_submission` reads it with a size cap
and checks every field the grader uses before using it; whatever goes wrong becomes
`Submission.error`, a reason the teacher can act on, and the batch goes on.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

#: The largest notebook the grader reads (a notebook with many plots is a few MiB).
MAX_BYTES = 64 * 2**20
MAX_CELLS = 10_000
_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
         codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}


class IntakeError(ValueError):
    """A submission that cannot be read as a notebook; the message says why."""


@dataclass
class Submission:
    """A submitted notebook as the grader sees it.

    ``sha256`` is of the file's bytes (empty when it could not be read); ``cells`` are the
    analysed answer cells (`notebook.code_cells`); ``tagged`` says whether any cell carried the
    ``answer`` tag; ``error`` is why the notebook cannot be graded ("" when it can).
    """

    path: Path
    sha256: str = ""
    cells: list = field(default_factory=list)
    tagged: bool = True
    error: str = ""


def read_bytes(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """Read a regular file of at most ``limit`` bytes (never blocks on a pipe or device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as err:
        raise IntakeError("no such notebook") from err
    except OSError as err:
        raise IntakeError(f"cannot be opened: {err.strerror}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IntakeError("not a regular file (a directory, device or pipe)")
        if info.st_size > limit:
            raise IntakeError(f"{info.st_size / 2**20:.1f} MiB, larger than the "
                              f"{limit / 2**20:g} MiB a notebook may have")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise IntakeError(f"larger than the {limit / 2**20:g} MiB a notebook may have")
        return b"".join(chunks)
    except OSError as err:
        raise IntakeError(f"cannot be read: {err.strerror}") from err
    finally:
        os.close(fd)


def decode(data: bytes) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); other encodings are named."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise IntakeError(f"{name} text; save the notebook as UTF-8 (Jupyter does)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise IntakeError(f"not UTF-8 text (a binary file?): invalid byte at position "
                          f"{err.start}") from err


def _kind(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def parse(text: str) -> dict:
    """Parse notebook JSON and check the fields the grader reads; return it normalised: each
    cell's ``source`` one string, its ``tags`` a list of strings."""
    if not text.strip():
        raise IntakeError("empty file")
    try:
        nb = json.loads(text)
    except RecursionError as err:
        raise IntakeError("not a notebook: JSON nested too deeply") from err
    except json.JSONDecodeError as err:
        raise IntakeError(f"not valid JSON: {err.msg} at line {err.lineno} column "
                          f"{err.colno}") from err
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise IntakeError(f"not a notebook: {str(err)[:200]}") from err
    if not isinstance(nb, dict):
        raise IntakeError(f"not a notebook: the JSON is a {type(nb).__name__}, not an object")
    version = nb.get("nbformat")
    if type(version) is not int or version != 4:
        raise IntakeError("not a notebook in nbformat 4: 'nbformat' must be the integer 4, "
                          f"found {_kind(version) if 'nbformat' in nb else 'nothing'}")
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise IntakeError(f"'cells' must be a list, found {_kind(cells)}")
    if len(cells) > MAX_CELLS:
        raise IntakeError(f"{len(cells)} cells, more than the {MAX_CELLS} allowed")
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise IntakeError(f"cell {number} is not a cell (no cell_type)")
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise IntakeError(f"cell {number}: 'source' must be text, found {_kind(source)}")
        cell["source"] = source
        metadata = cell.get("metadata", {})
        tags = metadata.get("tags", []) if isinstance(metadata, dict) else []
        cell["tags"] = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    return nb


def read_submission(path: str | Path, limit: int = MAX_BYTES) -> Submission:
    """Read, check and analyse a submitted notebook; never raises for a broken file."""
    from .notebook import code_cells

    submission = Submission(Path(path))
    try:
        data = read_bytes(path, limit)
        submission.sha256 = hashlib.sha256(data).hexdigest()
        submission.cells, submission.tagged = code_cells(parse(decode(data)))
    except IntakeError as err:
        submission.error = str(err)
    except (RecursionError, MemoryError, ValueError, TypeError) as err:
        submission.error = f"its cells could not be analysed ({type(err).__name__})"
    return submission
