"""A Ctrl-C while the grader writes its reports: the JSON and the CSV hold the same notebooks."""

import argparse
import csv
import json
import os
import signal

import pytest
from deepscope.grading import commands
from deepscope.grading.report import Report


def _report(name: str) -> Report:
    return Report(submission=name, assignment="toy")


def test_ctrl_c_between_the_two_writes_waits_for_both(tmp_path, monkeypatch):
    """CI once kept 6 notebooks in the JSON and 5 in the CSV: Ctrl-C landed between the writes."""
    args = argparse.Namespace(json=str(tmp_path / "r.json"), csv=str(tmp_path / "g.csv"))
    write = commands._write

    def write_then_interrupt(path, text):
        write(path, text)
        if path == args.json and '"b.ipynb"' in text:  # Ctrl-C before the second CSV write
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(commands, "_write", write_then_interrupt)
    reports: list[Report] = []
    commands._record(reports, _report("a.ipynb"), args, final=False)
    with pytest.raises(KeyboardInterrupt):  # delivered once both files are written
        commands._record(reports, _report("b.ipynb"), args, final=False)
    data = json.loads((tmp_path / "r.json").read_text())
    written = data if isinstance(data, list) else data.get("reports", [data])
    assert len(written) == len(reports) == 2
    with open(tmp_path / "g.csv", newline="") as file:
        assert len(list(csv.reader(file))) - 1 == len(reports)
