"""pytest plugin: record which `deepscope.widgets` factories each test builds and drives.

Used by tests/test_widget_factories.py, which runs the factories' tests again in a subprocess:

    python -m pytest -p tests.browser.factory_probe NODEIDS...   # DEEPSCOPE_FACTORY_PROBE=out.json

Every factory is wrapped where a test can reach it (``deepscope.widgets`` and the submodule that
defines it). The wrapper observes the ``value`` of each control of the box the factory returns.
After each test the plugin writes, for every box the test built or touched: the factory, which
controls changed their value, how many redraws followed (``state["renders"]``), and whether the
test passed. A factory is *driven* by a test when a control of its box changed and a redraw
followed, in a test that passed.
"""

from __future__ import annotations

import functools
import importlib
import json
import os

import pytest

ENTRIES: list[dict] = []  # every box built in this session
RECORDS: list[dict] = []
BEFORE: dict[str, dict[int, tuple[int, int]]] = {}


def _renders(box) -> int:
    state = getattr(box, "state", None)
    return state.get("renders", 0) if isinstance(state, dict) else 0


def _wrap(name: str, original):
    @functools.wraps(original)
    def factory(*args, **kwargs):
        box = original(*args, **kwargs)
        entry = {"factory": name, "box": box, "renders": _renders(box), "moved": [],
                 "explorer": isinstance(getattr(box, "controls", None), dict)
                 and hasattr(box, "state") and hasattr(box, "output")}
        for control_name, control in (getattr(box, "controls", None) or {}).items():
            control.observe(lambda _change, n=control_name: entry["moved"].append(n),
                            names="value")
        ENTRIES.append(entry)
        return box

    factory.__wrapped_by_probe__ = True
    return factory


def pytest_configure(config):
    from tests.browser.discover import exported_names

    names = exported_names()
    for name, module_name in names.items():
        if name == "explorer":
            continue
        for module in (importlib.import_module("deepscope.widgets"),
                       importlib.import_module(module_name)):
            original = getattr(module, name, None)
            if callable(original) and not getattr(original, "__wrapped_by_probe__", False):
                setattr(module, name, _wrap(name, original))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    BEFORE[item.nodeid] = {k: (len(e["moved"]), _renders(e["box"]))
                           for k, e in enumerate(ENTRIES)}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    before = BEFORE.pop(item.nodeid, {})
    for k, entry in enumerate(ENTRIES):
        moved_before, renders_before = before.get(k, (0, entry["renders"]))
        moved = entry["moved"][moved_before:]
        redraws = _renders(entry["box"]) - renders_before
        if k in before and not moved and not redraws:
            continue  # built by an earlier test and untouched by this one
        RECORDS.append({"nodeid": item.nodeid, "test": item.name, "factory": entry["factory"],
                        "explorer": entry["explorer"], "moved": sorted(set(moved)),
                        "redraws": redraws, "passed": report.passed})


def pytest_sessionfinish(session):
    path = os.environ.get("DEEPSCOPE_FACTORY_PROBE")
    if path:
        with open(path, "w") as f:
            json.dump(RECORDS, f, indent=1)
