"""The sandbox's child harness, exercised in this process (its isolation steps are tested
through real sandboxes in test_sandbox.py and the adversarial suite)."""

import os

import numpy as np
import pytest
import torch
from deepscope.grading import _child, _isolate, protocol


def _frames(fn) -> list[bytes]:
    """Run fn(channel) against a pipe; return the frames written (kind + body)."""
    r, w = os.pipe()
    try:
        fn(protocol.Channel(w))
        os.close(w)
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
    finally:
        os.close(r)
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(data[4:4 + length])
        data = data[4 + length:]
    return frames


def test_execute_cells_reports_top_level_errors_and_goes_on():
    namespace = {"__builtins__": __builtins__}
    cells = [{"number": 2, "source": "x = 1\nraise SystemExit(4)\n"},
             {"number": 5, "source": "def f():\n    return y\nz = undefined\n"},
             {"number": 7, "source": "w = x + 1\n"}]
    errors = _child.execute_cells(cells, namespace)
    assert [e["cell"] for e in errors] == [2, 5] and namespace["w"] == 2
    assert "called exit(4)" in errors[0]["message"]
    assert errors[1]["where"] == "cell 5, line 3: z = undefined"
    assert "answer cells run on their own" in errors[1]["message"]
    frames = _frames(lambda ch: _child.execute_cells(cells[1:], dict(namespace), ch))
    assert frames[0] == b'P{"cell": 5}' and frames[1].startswith(b'E{"cell": 5')
    assert frames[2] == b'P{"cell": 7}' and len(frames) == 3


def test_describe_error_survives_a_hostile_str():
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert _child.describe_error(Weird())["message"] == "Weird"


def _roundtrip(fn, args, kwargs=None, positions=()):
    body = _child.call_result(3, fn, (args, kwargs or {}, positions))
    index, value = protocol.decode_call(body)
    assert index == 3
    return value


def test_call_results_round_trip_values_and_errors():
    x = torch.arange(4.0, dtype=torch.float64)
    kind, value = _roundtrip(lambda t: {"y": t * 2, "n": np.float32(1.5), "i": np.int64(2)},
                             (x,))
    assert kind == "ok" and torch.equal(value["y"], 2 * x) and value["n"] == 1.5
    assert value["i"] == 2
    kind, info = _roundtrip(lambda t: 1 / 0, (x,))
    assert kind == "error" and info["type"] == "ZeroDivisionError"


def test_call_results_with_gradients():
    z = torch.randn(3, 2, dtype=torch.float64)
    kind, (value, (grad,)) = _roundtrip(lambda t: (t**2).sum(), (z,), positions=(0,))
    assert kind == "ok" and torch.allclose(value, (z**2).sum()) and torch.allclose(grad, 2 * z)
    kind, info = _roundtrip(lambda t: (t**2).sum().detach(), (z,), positions=(0,))
    assert kind == "error" and "not differentiable" in info["message"]
    kind, value = _roundtrip(lambda t: "a string", (z,), positions=(0,))
    assert (kind, value) == ("ok", "a string")  # the judge reports the wrong type
    kind, (value, (g1, g2)) = _roundtrip(lambda a, b: a.sum(), (z, z.clone()), positions=(0, 1))
    assert torch.equal(g2, torch.zeros_like(z))  # an unused argument gets a zero gradient


def test_run_calls_every_case_or_reports_a_missing_function():
    job = {"preamble": "import torch\n", "function": "f", "forbidden": [],
           "cells": [{"number": 1, "source": "def f(x):\n    return x + 1\n"}],
           "calls": [((torch.ones(2),), {}), ((torch.zeros(2),), {})]}
    conversation = protocol.Conversation([1], 2, 2**20, 2**24)
    for frame in [b"R"] + _frames(lambda ch: _child.run(job, ch)) + [b"D"]:
        conversation._accept(frame[:1], frame[1:])
    assert conversation.done and torch.equal(conversation.calls[1][1], torch.ones(2))
    frames = _frames(lambda ch: _child.run({**job, "function": "g"}, ch))
    results = [protocol.decode_call(f[1:]) for f in frames if f[:1] == b"C"]
    assert all(v[0] == "error" and "no function named 'g'" in v[1]["message"]
               for _, v in results) and len(results) == 2


@pytest.mark.skipif(not os.path.exists("/proc/self/mountinfo"), reason="Linux only")
def test_mount_flags_are_read_from_mountinfo():
    assert isinstance(_isolate._mount_flags("/"), int)
    assert "/" in _isolate._mounts_under("/")


def test_set_limits_lowers_every_limit_for_good():
    """In a forked process: the limits are set, and cannot be raised again."""
    import resource

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            _isolate.set_limits({"tasks": 7, "memory_bytes": 3 * 2**30, "cpu_seconds": 9,
                               "tmp_bytes": 1024})
            got = [resource.getrlimit(getattr(resource, n)) for n in
                   ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE")]
            try:
                resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
                raised = "raised"
            except ValueError:
                raised = "refused"
            os.write(w, repr((got, raised)).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    got, raised = eval(os.read(r, 4096).decode())  # noqa: S307 - our own child's repr
    os.close(r)
    assert got == [(7, 7), (3 * 2**30, 3 * 2**30), (9, 9), (1024, 1024), (0, 0)]
    assert raised == "refused"
