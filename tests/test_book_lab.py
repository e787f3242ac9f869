"""`python3 book.py lab` as root: JupyterLab gets --allow-root and the reader a one-line notice.

No server is started: the command book.py would run is captured.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def book():
    spec = importlib.util.spec_from_file_location("book_cli", ROOT / "book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lab(book, monkeypatch, capsys, euid: int, rest=()):
    ran = []
    monkeypatch.setattr(book.os, "geteuid", lambda: euid)
    monkeypatch.setattr(book, "_run", lambda cmd, **kwargs: ran.append([str(c) for c in cmd]) or 0)
    monkeypatch.setattr(book, "setup", lambda use_venv: sys.executable)
    assert book.main(["lab", *rest]) == 0
    [cmd] = ran
    return cmd, capsys.readouterr().out


def test_as_root_jupyterlab_gets_allow_root_and_one_notice(book, monkeypatch, capsys):
    cmd, out = _lab(book, monkeypatch, capsys, euid=0)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"] and cmd.count("--allow-root") == 1
    assert cmd[cmd.index("--ServerApp.root_dir") + 1] == str(ROOT / "chapters")
    notice = [line for line in out.splitlines() if "root" in line]
    assert notice == ["book.py: running as root (a container?), so JupyterLab starts with "
                      "--allow-root"]


def test_as_a_user_nothing_is_added(book, monkeypatch, capsys):
    cmd, out = _lab(book, monkeypatch, capsys, euid=1000, rest=["--port", "9999"])
    assert "--allow-root" not in cmd and cmd[-2:] == ["--port", "9999"]
    assert "root" not in out


def test_an_explicit_allow_root_is_not_doubled(book, monkeypatch, capsys):
    cmd, out = _lab(book, monkeypatch, capsys, euid=0, rest=["--allow-root"])
    assert cmd.count("--allow-root") == 1 and "root (a container?)" not in out


def test_the_root_command_is_one_jupyterlab_accepts(book):
    """The flag is JupyterLab's own (its help lists it), so the server will not refuse it."""
    import subprocess

    cmd, notice = book.lab_command(sys.executable, [], euid=0)
    assert notice and cmd[-1] == "--allow-root"
    helptext = subprocess.run([sys.executable, "-m", "jupyterlab", "--help-all"],
                              capture_output=True, text=True, timeout=120).stdout
    assert "--allow-root" in helptext
