"""The browser check must be able to fail: broken widgets in small synthetic notebooks.

One JupyterLab serves three notebooks that each break one promise the check enforces: an explorer
whose output ignores its control, a widget whose front-end class does not exist (the page shows
a widget error), and a cell that raises.
"""

from __future__ import annotations

import nbformat
import pytest

from tests.browser import lab, notebook_page

pytestmark = pytest.mark.browser

FROZEN = """\
import ipywidgets as W
import matplotlib.pyplot as plt
from deepscope.widgets import explorer


def render(values):  # ignores the slider: the picture never changes
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    return fig, {}


explorer({"a": W.IntSlider(value=0, min=0, max=5)}, render, title="frozen")"""

UNKNOWN_CLASS = """\
import ipywidgets as W
from traitlets import Unicode


class Unknown(W.DOMWidget):
    _model_module = Unicode("deepscope-no-such-module").tag(sync=True)
    _model_name = Unicode("NoSuchModel").tag(sync=True)
    _view_module = Unicode("deepscope-no-such-module").tag(sync=True)
    _view_name = Unicode("NoSuchView").tag(sync=True)


Unknown()"""

RAISES = """\
raise RuntimeError("deliberate failure")"""

CASES = {
    "frozen": (FROZEN, "to change after moving 'a'"),
    "unknown_class": (UNKNOWN_CLASS, "rendered as an error.*Failed to load model class "
                                     "'NoSuchModel' from module 'deepscope-no-such-module'"),
    "raises": (RAISES, "cell 1 \\('raise RuntimeError\\(\"deliberate failure\"\\)'\\) raised "
                       "RuntimeError: deliberate failure"),
}


def test_broken_widgets_fail_the_check(browser, artifacts, tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    for name, (code, _) in CASES.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, book / f"{name}.ipynb")
    failures = {}
    with lab.lab_server(book, tmp_path / "lab") as server:
        for name, (_, expected) in CASES.items():
            context = browser.new_context(viewport={"width": 1200, "height": 800})
            page = context.new_page()
            try:
                with pytest.raises(notebook_page.NotebookFailure, match=expected) as info:
                    notebook_page.check_notebook(page, server, f"{name}.ipynb",
                                                 artifacts / "self-test", widget_timeout=10)
                failures[name] = str(info.value)
            finally:
                context.close()
    print("\n".join(f"{name}: {message}" for name, message in failures.items()))
    assert set(failures) == set(CASES)
