"""The assignment every attack answers: one question, ``attack(x)``, graded on ``x = ones(3)``.

A correct answer returns ``2 * x`` (1 point). The attacks return *evidence* instead (what they
could read, how many processes they could start, ...); the judge records every returned value in
`SEEN` (the judge runs in the grader's process), so a test can look at exactly what came out of
the sandbox.
"""

from __future__ import annotations

import torch
from deepscope.grading import Assignment, Call, Check, Fail, Question

#: Values returned by ``attack`` calls, in the order the judge saw them.
SEEN: list = []


def _doubles(ctx):
    x = torch.ones(3)

    def judge(outs):
        SEEN.append(outs[0])
        if not (isinstance(outs[0], torch.Tensor) and torch.equal(outs[0], 2 * x)):
            raise Fail("attack(x) should return 2 * x")

    return [Call(x)], judge


ASSIGNMENT = Assignment("attack", "The adversarial suite's assignment", [
    Question("attack", "Return 2 * x", [Check("returns 2 * x", 1, _doubles)], time_limit=10.0),
])

#: Prepended to every attack's answer cell: helpers that turn any failure into evidence.
PRELUDE = '''\
import os, sys, json, time, signal, socket, subprocess, ctypes, glob


def _try(fn):
    """Run fn(); return its value, or 'ERR:<exception type>' when it failed."""
    try:
        return fn()
    except BaseException as err:  # noqa: BLE001
        return f"ERR:{type(err).__name__}"


def _read(path, size=4000):
    with open(path, "rb") as fh:
        return fh.read(size).decode("utf-8", "replace")


def _in_fresh_pid_namespace():
    """Destructive attacks run only where the sandbox is verified: pid 1-3 of a fresh pid
    namespace (the grader's own machine never gives a user process such a pid)."""
    return os.getpid() <= 3

'''

#: A correct answer, used by classmates' notebooks and the canary after each attack.
CORRECT = "def attack(x):\n    return 2 * x\n"
