"""The browser check itself, on small synthetic notebooks served by one JupyterLab.

It can pass: one explorer per kind of control the check knows how to move (slider, dropdown,
toggle buttons, radio buttons, checkbox, text fields...), each drawing its value, so every kind
is moved through the page and its figure must change.

It can fail: three notebooks each break one promise the check enforces: an explorer whose output
ignores its control, a widget whose front-end class does not exist (the page shows a widget
error), and a cell that raises.
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

EVERY_CONTROL = """\
import ipywidgets as W
import matplotlib.pyplot as plt
from deepscope.widgets import explorer


def printer(values):  # a tiny figure that shows the value
    fig, ax = plt.subplots(figsize=(3, 0.4))
    ax.axis("off")
    ax.text(0, 0.3, repr(values))
    return fig, {}


controls = {
    "IntSlider": W.IntSlider(value=3, min=0, max=5),
    "FloatSlider": W.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.1),
    "SelectionSlider": W.SelectionSlider(options=["a", "b", "c"], value="a"),
    "IntRangeSlider": W.IntRangeSlider(value=(2, 4), min=0, max=9),
    "Dropdown": W.Dropdown(options=["gradient", "smoothgrad"], value="gradient"),
    "ToggleButtons": W.ToggleButtons(options=["x", "y"], value="x"),
    "RadioButtons": W.RadioButtons(options=["p", "q", "r"], value="q"),
    "Checkbox": W.Checkbox(value=False, description="on"),
    "ToggleButton": W.ToggleButton(value=False, description="t"),
    "BoundedIntText": W.BoundedIntText(value=9, min=0, max=9),
    "FloatText": W.FloatText(value=0.5, step=0.25),
    "Text": W.Text(value="abc", continuous_update=False),
}
boxes = [explorer({name: control}, printer, title=name) for name, control in controls.items()]
W.VBox(boxes)"""

CASES = {
    "frozen": (FROZEN, "to change after moving 'a'"),
    "unknown_class": (UNKNOWN_CLASS, "rendered as an error.*Failed to load model class "
                                     "'NoSuchModel' from module 'deepscope-no-such-module'"),
    "raises": (RAISES, "cell 1 \\('raise RuntimeError\\(\"deliberate failure\"\\)'\\) raised "
                       "RuntimeError: deliberate failure"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One JupyterLab serving every synthetic notebook of this file."""
    folder = tmp_path_factory.mktemp("synthetic")
    book = folder / "book"
    book.mkdir()
    for name, code in {"every_control": EVERY_CONTROL,
                       **{name: code for name, (code, _) in CASES.items()}}.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.write(nb, book / f"{name}.ipynb")
    with lab.lab_server(book, folder / "lab") as running:
        yield running


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_every_kind_of_control_is_moved_through_the_page(server, page, artifacts):
    result = notebook_page.check_notebook(page, server, "every_control.ipynb",
                                          artifacts / "self-test", widget_timeout=30)
    moved = {e["explorer"]: (e["action"], e["from"], e["to"]) for e in result["explorers"]}
    print("\n".join(f"{k}: {v}" for k, v in moved.items()))
    assert list(moved) == ["IntSlider", "FloatSlider", "SelectionSlider", "IntRangeSlider",
                           "Dropdown", "ToggleButtons", "RadioButtons", "Checkbox",
                           "ToggleButton", "BoundedIntText", "FloatText", "Text"]
    assert moved["IntSlider"][2] == 4 and moved["FloatSlider"][2] == pytest.approx(0.9)
    assert moved["SelectionSlider"][2] == "b" and moved["IntRangeSlider"][2] == [1, 4]
    assert moved["Dropdown"][2] == "smoothgrad" and moved["ToggleButtons"][2] == "y"
    assert moved["RadioButtons"][2] == "r" and moved["Checkbox"][2] is True
    assert moved["ToggleButton"][2] is True and moved["BoundedIntText"][2] == 8
    assert moved["FloatText"][2] == 0.75 and moved["Text"][2] == "abcx"


@pytest.mark.parametrize("case", list(CASES))
def test_broken_widgets_fail_the_check(case, server, page, artifacts):
    with pytest.raises(notebook_page.NotebookFailure, match=CASES[case][1]) as info:
        notebook_page.check_notebook(page, server, f"{case}.ipynb", artifacts / "self-test",
                                     widget_timeout=10)
    print(info.value)
