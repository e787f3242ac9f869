"""Grader self-tests: the toy assignment and helpers shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TOY = str(Path(__file__).with_name("toy.py"))


@pytest.fixture
def toy():
    from . import toy as module

    return module
