"""A batch no notebook can break: 30 notebooks, 3 malformed and 3 adversarial, graded by the
command line; the CSV and JSON are complete; a Ctrl-C midway keeps what was graded; --resume
finishes the batch."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

TOY = str(Path(__file__).resolve().parents[1] / "toy.py")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import toy  # noqa: E402

SLOW_NORM = "import time\ndef norm(x):\n    time.sleep(0.4)\n    return float(x.norm())\n"
NAIVE = "def softmax(x):\n    e = x.exp()\n    return e / e.sum(dim=-1, keepdim=True)\n"
ADVERSARIAL = {
    "adv-environment.ipynb": {"norm": "import os\ndef norm(x):\n    raise ValueError(str("
                                      "dict(os.environ)))\n"},
    "adv-fork-bomb.ipynb": {"norm": "import os, time\ndef norm(x):\n    for _ in range(100):\n"
                                    "        if os.fork() == 0:\n            time.sleep(2)\n"
                                    "            os._exit(0)\n    return 0.0\n"},
    "adv-frames.ipynb": {"softmax": "import os, struct\ndef softmax(x):\n    for fd in "
                                    "range(3, 64):\n        try:\n            os.write(fd, "
                                    "struct.pack('>I', 2) + b'S{')\n        except OSError:\n"
                                    "            pass\n    return x\n"},
}
MALFORMED = {"bad-nbformat.ipynb": b'{"nbformat": "4", "cells": []}',
             "bad-nesting.ipynb": b"[" * 100_000,
             "bad-binary.ipynb": bytes(range(256)) * 16}


def make_batch(folder: Path) -> list[str]:
    """24 ordinary notebooks (correct, slow, naive, stubs), 3 adversarial, 3 malformed."""
    names = []
    for i in range(24):
        sources = {**toy.SOLUTION, "norm": SLOW_NORM}
        if i % 3 == 1:
            sources["softmax"] = NAIVE
        if i % 6 == 5:
            sources = {"softmax": "def softmax(x):\n    raise NotImplementedError\n"}
        names.append(toy.write(folder, sources, name=f"student-{i:02d}.ipynb"))
    for name, sources in ADVERSARIAL.items():
        names.append(toy.write(folder, {**toy.SOLUTION, **sources}, name=name))
    for name, data in MALFORMED.items():
        (folder / name).write_bytes(data)
        names.append(str(folder / name))
    return sorted(names)


def grade_command(folder: Path, *extra: str, json_file: bool = True) -> list[str]:
    """The teacher's command for the batch in ``folder`` (made on first use)."""
    names = sorted(str(p) for p in folder.glob("*.ipynb")) or make_batch(folder)
    reports = ["--json", str(folder / "out" / "reports.json")] if json_file else []
    return [sys.executable, "-m", "deepscope.cli", "grade", *names, "--assignment", TOY,
            "--jobs", "2", "--quiet", *reports, "--csv", str(folder / "out" / "gradebook.csv"),
            *extra]


def _reports(folder: Path) -> list[dict]:
    data = json.loads((folder / "out" / "reports.json").read_text())
    return data if isinstance(data, list) else data.get("reports", [data])


def _rows(folder: Path) -> list[list[str]]:
    with open(folder / "out" / "gradebook.csv", newline="") as file:
        return list(csv.reader(file))[1:]


def test_a_batch_with_malformed_and_adversarial_notebooks_is_complete(tmp_path):
    run = subprocess.run(grade_command(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]  # three notebooks could not be graded
    reports, rows = _reports(tmp_path), _rows(tmp_path)
    assert len(reports) == len(rows) == 30
    by_name = {Path(r["submission"]).name: r for r in reports}
    assert {n for n, r in by_name.items() if r["error"]} == set(MALFORMED)
    assert by_name["student-00.ipynb"]["points"] == 4.0
    assert by_name["student-01.ipynb"]["points"] == 3.0  # the naive softmax overflows
    assert by_name["student-05.ipynb"]["points"] == 0.0
    assert all(by_name[n]["points"] < 4.0 for n in ADVERSARIAL)
    assert "DEEPSCOPE" not in json.dumps(by_name["adv-environment.ipynb"])
    assert all(row[-1] in ("namespaces", "bubblewrap") for row in rows)


def test_ctrl_c_keeps_what_was_graded_and_resume_finishes(tmp_path):
    process = subprocess.Popen(grade_command(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    target = tmp_path / "out" / "reports.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if target.exists() and len(_reports(tmp_path)) >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "rerun with --resume" in err
    kept = _reports(tmp_path)
    assert 5 <= len(kept) < 30 and len(_rows(tmp_path)) == len(kept)
    run = subprocess.run(grade_command(tmp_path, "--resume"), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stdout.count("already graded (same sha256)") == len(kept)
    final = _reports(tmp_path)
    assert len(final) == len(_rows(tmp_path)) == 30
    assert [r["sha256"] for r in final[:len(kept)]] == [r["sha256"] for r in kept]


def test_resume_regrades_a_changed_notebook(tmp_path):
    for i in range(3):
        toy.write(tmp_path, {"softmax": "def softmax(x):\n    raise NotImplementedError\n"},
                  name=f"s{i}.ipynb")
    first = subprocess.run(grade_command(tmp_path), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    nbformat.write(toy.notebook(toy.SOLUTION), tmp_path / "s1.ipynb")
    run = subprocess.run(grade_command(tmp_path, "--resume"), capture_output=True, text=True,
                         timeout=600)
    assert run.stdout.count("already graded") == 2
    assert [r["points"] for r in _reports(tmp_path)] == [0.0, 4.0, 0.0]
    missing = subprocess.run(grade_command(tmp_path, "--resume", json_file=False),
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "--resume needs --json" in missing.stderr
