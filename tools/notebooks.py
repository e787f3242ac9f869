"""Author notebooks as py:percent text and keep the committed .ipynb files clean.

    python -m tools.notebooks build SRC.py OUT.ipynb   # py:percent -> stripped notebook
    python -m tools.notebooks export NB.ipynb SRC.py   # notebook -> py:percent, to edit as text
    python -m tools.notebooks strip [NB.ipynb ...]     # drop outputs/counts (all chapters if none)

The .ipynb is what is committed and executed; the py:percent text is a convenient way to write
and review it (jupytext does the conversion). Cell tags are written as ``# %% tags=["x"]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

# One definition of the repository's notebook format, shared with `deepscope release`.
from deepscope.grading.notebook import clean

ROOT = Path(__file__).resolve().parents[1]
def build(src: Path, out: Path) -> None:
    import jupytext

    nb = clean(jupytext.read(src, fmt="py:percent"))
    nbformat.validate(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


def export(nb_path: Path, out: Path) -> None:
    import jupytext

    jupytext.write(nbformat.read(nb_path, as_version=4), out, fmt="py:percent")


def strip(paths: list[Path]) -> None:
    for path in paths or sorted((ROOT / "chapters").rglob("*.ipynb")):
        nbformat.write(clean(nbformat.read(path, as_version=4)), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("src", type=Path)
    b.add_argument("out", type=Path)
    e = sub.add_parser("export")
    e.add_argument("nb", type=Path)
    e.add_argument("out", type=Path)
    s = sub.add_parser("strip")
    s.add_argument("paths", type=Path, nargs="*")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build(args.src, args.out)
    elif args.cmd == "export":
        export(args.nb, args.out)
    else:
        strip(args.paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
