"""Every attack of `cases.CASES`, on every isolation the machine offers: the case's own
expected outcome, and the invariants that hold for all of them."""

from __future__ import annotations

import inspect
import json
import os
import time

import pytest
from deepscope.grading import grade

from . import attack
from .cases import CASES
from .conftest import (
    SECRETS,
    dev_shm_files,
    grade_attack,
    notebook,
    processes_with_marker,
    shm_segments_with_our_keys,
)


def _isolations() -> list:
    """Both isolation paths; one this machine lacks is skipped, unless CI requires it
    (DEEPSCOPE_SANDBOX_REQUIRED=namespaces,bubblewrap): then its tests fail."""
    if "isolation" not in inspect.signature(grade).parameters:
        return [None]  # the grader before isolation paths could be chosen
    from deepscope.grading import sandbox

    required = os.environ.get("DEEPSCOPE_SANDBOX_REQUIRED", "").split(",")
    found = []
    for name in ("namespaces", "bubblewrap"):
        reason = "" if name in required else sandbox.unavailable(name)
        found.append(pytest.param(name, marks=pytest.mark.skipif(bool(reason), reason=reason)))
    return found


@pytest.fixture(params=_isolations())
def isolation(request):
    return request.param


def _gone(probe, seconds=5.0, quiet=0.5):
    """True once ``probe()`` has found nothing for ``quiet`` seconds in a row, within ``seconds``.

    One empty listing is not enough: the report can come back while the kernel is still killing
    the sandbox's pid namespace, and a child forked just before that can exec (and show the
    marker in its command line) after a first empty listing; it dies within about 0.1 s."""
    deadline = time.time() + seconds
    empty_since = None
    while time.time() < deadline:
        if probe():
            empty_since = None
        elif empty_since is None:
            empty_since = time.time()
        elif time.time() - empty_since >= quiet:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_attack(case, workspace, isolation):
    if isolation:
        from deepscope.grading import sandbox

        assert not sandbox.unavailable(isolation), sandbox.unavailable(isolation)
    outcome = grade_attack(case, workspace, isolation)
    evidence = outcome.text + "\n" + repr(outcome.value)
    leaked = [name for name, token in SECRETS.items() if token in evidence]
    assert not leaked, f"{case.id} leaked {leaked}: {evidence[:3000]}"
    assert "BEGIN SOLUTION" not in evidence, f"{case.id} read a master"
    assert workspace.sentinel.read_text() == "original"
    assert {k: v.hits for k, v in workspace.listeners.items()} == dict.fromkeys(
        workspace.listeners, 0)
    assert outcome.report.points == 0, outcome.report.table()
    assert not outcome.report.error, outcome.report.error
    assert _gone(processes_with_marker), "processes of the attack outlived it"
    assert not shm_segments_with_our_keys(), "SysV shared memory outlived the attack"
    assert not dev_shm_files(), "files in /dev/shm outlived the attack"
    if isolation:
        assert outcome.report.sandbox.get("isolation") == isolation
    case.check(outcome)


def test_the_grader_still_grades_after_the_attacks(tmp_path, isolation):
    path = tmp_path / "canary.ipynb"
    path.write_text(json.dumps(notebook(attack.CORRECT)))
    kwargs = {"isolation": isolation} if isolation else {}
    report = grade(path, attack.ASSIGNMENT, **kwargs)
    assert report.points == 1.0, report.table()
