"""Where no isolation works, the grader refuses, and says why and what to install; with
--trust-submissions it grades, and every report line says the submissions were not isolated.

The machine is made to refuse for real: the command runs as a non-root user inside a user
namespace whose ``user.max_user_namespaces`` is 0, so neither the grader nor bwrap (not setuid
on Debian) can create the namespaces a sandbox needs.
"""

from __future__ import annotations

import csv
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOY = str(Path(__file__).resolve().parents[1] / "toy.py")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import toy  # noqa: E402


def run_without_namespaces(command: list[str], path_env: str) -> subprocess.CompletedProcess:
    """Run ``command`` where creating user namespaces is refused (see the module docstring)."""
    uid, gid = os.geteuid(), os.getegid()

    def refuse_namespaces():  # in the forked child, before exec
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
            raise OSError(ctypes.get_errno(), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"1000 {uid} 1"),
                           ("gid_map", f"1000 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as file:
                file.write(text)
        with open("/proc/sys/user/max_user_namespaces", "w") as file:
            file.write("0")
        # exec as uid 1000 (not 0) drops the capabilities this namespace gave us

    env = {"PATH": path_env, "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run(command, preexec_fn=refuse_namespaces, env=env, capture_output=True,
                          text=True, timeout=600)


def _can_simulate() -> str:
    try:
        probe = run_without_namespaces([sys.executable, "-c", "import os; print(os.geteuid())"],
                                       "/usr/bin:/bin")
    except (OSError, subprocess.SubprocessError) as err:
        return f"cannot make a user namespace to simulate the refusal: {err}"
    return "" if probe.stdout.strip() == "1000" else probe.stderr[-500:]


SIMULATE = _can_simulate()
pytestmark = pytest.mark.skipif(bool(SIMULATE), reason=SIMULATE or "ok")


@pytest.fixture
def submission(tmp_path):
    path = toy.write(tmp_path, toy.SOLUTION)
    os.chmod(tmp_path, 0o755)
    return path


def _grade(submission, *extra):
    return [sys.executable, "-m", "deepscope.cli", "grade", submission, "--assignment", TOY,
            *extra]


def test_no_namespaces_and_no_bwrap_refuses_with_what_to_install(submission, tmp_path):
    empty = tmp_path / "no-bwrap-here"
    empty.mkdir()
    run = run_without_namespaces(_grade(submission), str(empty))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot isolate submissions on this machine" in run.stderr
    assert "namespaces: unshare(user, pid, ipc, net, uts): No space left on device" in run.stderr
    assert "bubblewrap: bwrap is not installed" in run.stderr
    assert "sudo apt-get install bubblewrap" in run.stderr and "--trust-submissions" in \
        run.stderr
    assert "4 / 4" not in run.stdout  # nothing was graded


@pytest.mark.skipif(not Path("/usr/bin/bwrap").exists(), reason="bubblewrap is not installed")
def test_bwrap_that_cannot_make_namespaces_refuses_too(submission):
    run = run_without_namespaces(_grade(submission), "/usr/bin:/bin")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "bubblewrap: " in run.stderr and "bwrap is not installed" not in run.stderr


def test_trust_submissions_grades_and_says_so_on_every_line(submission, tmp_path):
    out = tmp_path / "out"
    run = run_without_namespaces(
        _grade(submission, "--trust-submissions", "--csv", str(out / "g.csv"), "--json",
               str(out / "r.json")), "/usr/bin:/bin")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "grading WITHOUT ISOLATION" in run.stderr
    assert "4 / 4" in run.stdout and "WARNING: NOT ISOLATED (--trust-submissions)" in run.stdout
    with open(out / "g.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0][-1] == "isolation" and rows[1][-1] == "NOT ISOLATED (--trust-submissions)"
    assert '"isolation": "none"' in (out / "r.json").read_text()
