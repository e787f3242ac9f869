"""Every notebook that uses a `deepscope.widgets` factory, run in JupyterLab in headless Chromium.

For each one (found by `tests.browser.discover`, never listed by hand): a fresh copy is served by
its own JupyterLab, all cells run from the Run menu, every widget view must render, one control
of every explorer is moved and its output must change. Screenshots land in the artifacts folder
printed in the header and summary.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.browser import discover, lab, notebook_page

ROOT = discover.ROOT
NOTEBOOKS = discover.widget_notebooks(ROOT / "chapters")

pytestmark = pytest.mark.browser


def _fresh_copy(notebook: Path, book: Path) -> str:
    """Copy the notebook's folder (its notebook and the files beside it) into ``book``."""
    relative = notebook.relative_to(ROOT)
    shutil.copytree(notebook.parent, book / relative.parent,
                    ignore=lambda folder, names: [n for n in names if n.endswith(".ipynb")
                                                  or n == ".ipynb_checkpoints"])
    shutil.copy2(notebook, book / relative)
    if (ROOT / "data").is_dir():  # relative paths such as ../../data keep working
        (book / "data").symlink_to(ROOT / "data", target_is_directory=True)
    return relative.as_posix()


def test_discovery_finds_the_preface_explorer():
    preface = ROOT / "chapters" / "00_preface" / "00_01_how_to_use_this_book.ipynb"
    assert NOTEBOOKS.get(preface) == ["digits_explorer"], NOTEBOOKS


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS),
                         ids=[str(p.relative_to(ROOT / "chapters")) for p in sorted(NOTEBOOKS)])
def test_widgets_work_in_jupyterlab(notebook, browser, artifacts, browser_results, tmp_path):
    start = time.perf_counter()
    relpath = _fresh_copy(notebook, tmp_path / "book")
    stem = notebook.stem
    with lab.lab_server(tmp_path / "book", tmp_path / "lab") as server:
        server_s = time.perf_counter() - start
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        console: list[str] = []
        try:
            result = notebook_page.check_notebook(page, server, relpath, artifacts,
                                                  console=console)
        except BaseException:
            page.screenshot(path=str(artifacts / f"{stem}-failure.png"), full_page=True)
            raise
        finally:
            context.close()
            (artifacts / f"{stem}-console.log").write_text("\n".join(console))
            shutil.copy(server.log, artifacts / f"{stem}-jupyterlab.log")
    result.update(server_s=round(server_s, 1), wall_s=round(time.perf_counter() - start, 1),
                  factories=NOTEBOOKS[notebook])
    browser_results.append(result)
    assert result["explorers"], "no explorer was checked"
