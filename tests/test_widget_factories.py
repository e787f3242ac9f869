"""The widget contract: every `deepscope.widgets` factory is built and driven by a headless test.

Chapter engineers test their own factories. This file checks that they did, for every factory
the package exports now or later: it finds the tests that name a factory (directly or through a
module-level helper or fixture), runs them again in a subprocess with the probe plugin
`tests.browser.factory_probe`, and requires, per factory, a passing test in which a control of
the factory's box changed its ``value`` and the box redrew. A factory without such a test fails
the contract with a message saying what is missing.

It also holds the headless tests of the preface's `digits_explorer` beyond the state checks of
tests/test_plotting_widgets_cli.py: the figure follows the slider, and the slider's bounds.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from deepscope import data, models, widgets

from tests.browser import discover

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
FACTORIES = sorted(name for name in discover.widget_factories() if name != "explorer")


# ---------------------------------------------------------------------------------------------
# Which tests name which factory (static)


def _names(node: ast.AST) -> set[str]:
    """Identifiers a piece of code mentions: names, attributes, function arguments."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
        elif isinstance(sub, ast.arg):
            found.add(sub.arg)  # a fixture parameter
    return found


def _closure(names: set[str], helpers: dict[str, set[str]]) -> set[str]:
    """``names`` plus the names of every module-level helper (or fixture) they reach."""
    seen, todo = set(names), list(names & helpers.keys())
    while todo:
        for name in helpers[todo.pop()] - seen:
            seen.add(name)
            if name in helpers:
                todo.append(name)
    return seen


def factory_tests(factories: list[str], paths: list[Path], root: Path = ROOT
                  ) -> dict[str, list[str]]:
    """Map each factory to the node ids of the test functions that reach its name."""
    found: dict[str, list[str]] = {f: [] for f in factories}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        helpers = {node.name: _names(node) for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and not node.name.startswith("test")}
        tests = [(node.name, node) for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.name.startswith("test")]
        tests += [(f"{cls.name}::{node.name}", node) for cls in tree.body
                  if isinstance(cls, ast.ClassDef) and cls.name.startswith("Test")
                  for node in cls.body
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.name.startswith("test")]
        prefix = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        for test, node in tests:
            reached = _closure(_names(node), helpers)
            for factory in factories:
                if factory in reached:
                    found[factory].append(f"{prefix}::{test}")
    return found


def unit_test_files() -> list[Path]:
    """Every unit-test file except the browser folder and this contract."""
    return sorted(p for p in TESTS.rglob("test_*.py")
                  if "browser" not in p.relative_to(TESTS).parts and p.name != Path(__file__).name)


# ---------------------------------------------------------------------------------------------
# Run them under the probe (dynamic)


def run_probe(nodeids: list[str], out: Path, timeout: float = 900) -> list[dict]:
    """Run ``nodeids`` in a fresh pytest with the probe plugin; return its records."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "COV_CORE_"))}  # not an xdist/coverage worker
    env.update(DEEPSCOPE_FACTORY_PROBE=str(out), DEEPSCOPE_THREADS="1", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "-p", "tests.browser.factory_probe", "--rootdir", str(ROOT),
           "-c", str(ROOT / "pyproject.toml"), "-q", "--no-header", *nodeids]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if not out.exists():
        raise AssertionError(f"the probe wrote nothing (exit {result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())


def driven(record: dict) -> bool:
    """A passing test changed a control of the factory's explorer and it redrew."""
    return record["passed"] and record["explorer"] and bool(record["moved"]) \
        and record["redraws"] > 0


def contract_gaps(factories: list[str], candidates: dict[str, list[str]],
                  records: list[dict]) -> dict[str, str]:
    """For each factory that breaks the contract, say why."""
    gaps = {}
    for factory in factories:
        mine = [r for r in records if r["factory"] == factory]
        if not candidates.get(factory):
            gaps[factory] = "no test under tests/ names it"
        elif not mine:
            gaps[factory] = f"its tests {candidates[factory]} never build it"
        elif not any(r["explorer"] for r in mine):
            gaps[factory] = "it does not return an explorer (.controls, .state, .output)"
        elif not any(driven(r) for r in mine):
            seen = sorted({(r["test"], tuple(r["moved"]), r["redraws"], r["passed"])
                           for r in mine})
            gaps[factory] = ("no passing test moves one of its controls and sees a redraw "
                             f"(test, controls moved, redraws, passed): {seen}")
    return gaps


SELF_TEST = '''
from deepscope import data, models, widgets
import torch


def _box():
    torch.manual_seed(0)
    x, y = data.digits("test")
    return widgets.digits_explorer(models.mlp(64, 16, 10), x[:6], y[:6])


def test_probe_drives():
    box = _box()
    box.controls["index"].value = 3
    assert box.state["index"] == 3


def test_probe_builds_only():
    assert _box().state["index"] == 0


def test_probe_redraws_without_a_control():
    box = _box()
    box.redraw()
    assert box.state["renders"] == 2


def test_probe_drives_but_fails():
    box = _box()
    box.controls["index"].value = 2
    assert box.state["index"] == 5
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Candidates per factory, and the probe's records of them and of SELF_TEST."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "test_probe_self.py").write_text(SELF_TEST)
    candidates = factory_tests(FACTORIES, unit_test_files())
    nodeids = sorted({n for ids in candidates.values() for n in ids})
    records = run_probe([*nodeids, str(folder / "test_probe_self.py")], folder / "records.json")
    return candidates, records


def test_every_factory_is_built_and_driven_by_a_headless_test(probe):
    candidates, records = probe
    assert FACTORIES, "deepscope.widgets exports no factory"
    gaps = contract_gaps(FACTORIES, candidates, records)
    assert not gaps, "\n".join(f"{factory}: {why}" for factory, why in gaps.items())
    print({f: sorted({r["test"] for r in records if r["factory"] == f and driven(r)})
           for f in FACTORIES})


def test_probe_tells_driving_from_building(probe):
    _, records = probe
    own = {r["test"]: r for r in records if r["test"].startswith("test_probe_")}
    assert driven(own["test_probe_drives"]), own
    assert own["test_probe_drives"]["moved"] == ["index"]
    for name in ("test_probe_builds_only", "test_probe_redraws_without_a_control",
                 "test_probe_drives_but_fails"):
        assert not driven(own[name]), own[name]
    assert own["test_probe_redraws_without_a_control"]["redraws"] == 1
    assert own["test_probe_drives_but_fails"]["moved"] == ["index"]


def test_contract_names_what_is_missing():
    records = [{"factory": "a_explorer", "test": "t", "explorer": True, "moved": [],
                "redraws": 0, "passed": True},
               {"factory": "c_explorer", "test": "t", "explorer": True, "moved": ["k"],
                "redraws": 1, "passed": True}]
    candidates = {"a_explorer": ["x::t"], "c_explorer": ["x::t"], "d_explorer": ["x::u"]}
    gaps = contract_gaps(["a_explorer", "b_explorer", "c_explorer", "d_explorer"], candidates,
                         records)
    assert set(gaps) == {"a_explorer", "b_explorer", "d_explorer"}
    assert gaps["b_explorer"] == "no test under tests/ names it"
    assert "never build it" in gaps["d_explorer"]
    assert "no passing test moves" in gaps["a_explorer"]


def test_static_scan_follows_helpers_and_fixtures(tmp_path):
    source = '''
import pytest
from deepscope import widgets


def make():
    return widgets.one_explorer()


@pytest.fixture
def box():
    return make()


def test_direct():
    widgets.two_explorer()


def test_through_fixture(box):
    pass


class TestGroup:
    def test_method(self):
        make()


def test_unrelated():
    pass
'''
    path = tmp_path / "test_fake.py"
    path.write_text(source)
    found = factory_tests(["one_explorer", "two_explorer", "three_explorer"], [path],
                          root=tmp_path)
    assert found == {"one_explorer": ["test_fake.py::test_through_fixture",
                                      "test_fake.py::TestGroup::test_method"],
                     "two_explorer": ["test_fake.py::test_direct"],
                     "three_explorer": []}


def test_every_factory_is_exported():
    """A factory listed in a submodule's ``__all__`` must be reachable as deepscope.widgets.X."""
    missing = [name for name in discover.exported_names() if not hasattr(widgets, name)]
    assert not missing, f"deepscope/widgets/__init__.py does not re-export {missing}"


# ---------------------------------------------------------------------------------------------
# Notebook discovery (used by the browser test)


def test_discovery_resolves_the_imports_a_notebook_may_use():
    factories = {"digits_explorer", "explorer"}
    cells = {
        "module": ["import deepscope", "deepscope.widgets.digits_explorer(m, x, y)"],
        "package": ["from deepscope import widgets as w", "box = w.digits_explorer(m, x, y)"],
        "name": ["from deepscope.widgets import digits_explorer as d\nd(m, x, y)"],
        "submodule": ["import deepscope.widgets.core as core", "core.explorer({}, f)"],
        "star": ["%matplotlib inline\nfrom deepscope.widgets import *", "digits_explorer(m)"],
    }
    assert {k: discover.factory_calls(v, factories) for k, v in cells.items()} == {
        "module": ["digits_explorer"], "package": ["digits_explorer"],
        "name": ["digits_explorer"], "submodule": ["explorer"], "star": ["digits_explorer"]}
    unrelated = ["from other import widgets", "widgets.digits_explorer()",
                 "digits_explorer()", "x = 'deepscope.widgets.digits_explorer()'",
                 "import deepscope", "deepscope.widgets.core  # not a call"]
    assert discover.factory_calls(unrelated, factories) == []
    assert discover.factory_calls(["this is not python ("], factories) == []


def test_discovery_finds_the_preface():
    found = discover.widget_notebooks()
    preface = ROOT / "chapters" / "00_preface" / "00_01_how_to_use_this_book.ipynb"
    assert found[preface] == ["digits_explorer"]


# ---------------------------------------------------------------------------------------------
# digits_explorer: what the reader sees follows the slider


def test_digits_explorer_figure_follows_the_slider():
    torch.manual_seed(0)
    net = models.mlp(64, 16, 10)
    x, y = data.digits("test")
    box = widgets.digits_explorer(net, x[:12], y[:12])
    box.controls["index"].value = 9
    image_ax, bar_ax = box.figure.axes
    assert np.array_equal(image_ax.images[0].get_array(), x[9, 0].numpy())
    assert image_ax.get_title() == f"image 9, label {int(y[9])}"
    heights = [bar.get_height() for bar in bar_ax.patches]
    with torch.no_grad():
        expected = torch.softmax(net(x[9:10]), dim=1)[0]
    np.testing.assert_allclose(heights, expected.numpy(), rtol=1e-5)
    colors = [bar.get_facecolor() for bar in bar_ax.patches]
    assert colors.count(colors[int(expected.argmax())]) == 1  # only the prediction is green
    assert bar_ax.get_title() == f"prediction {int(expected.argmax())}"
    box.controls["index"].value = 10**6  # the slider clamps to the last image
    assert box.state["index"] == 11 and box.state["renders"] == 3
