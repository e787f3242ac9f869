"""The sandbox: whatever a submission does in its process, the grader stays in control."""

import os
import time

import numpy as np
import pytest
import torch
from deepscope.grading import _child, sandbox

PREAMBLE = "import math\nimport torch\n"


def run(source, calls=None, *, function="f", time_limit=10.0, **kw):
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    job = {"preamble": PREAMBLE, "function": function,
           "cells": [{"number": 4, "source": source}],
           "calls": calls if calls is not None else [((x,), {})],
           "labels": ["check 1: doubles"] * (len(calls) if calls is not None else 1),
           "forbidden": ["deepscope", "captum"]}
    return sandbox.run_job(job, time_limit=time_limit, **kw)


def test_outputs_come_back_as_plain_data_with_dtype_and_structure():
    r = run("import numpy as np\ndef f(x):\n    return (2 * x, {'n': np.ones(2), 'k': 3}, None,"
            " 'hi', [1.5, True], object())\n")
    assert r.ended == "done" and r.reason == "" and r.cell_errors == []
    kind, (y, d, none, s, lst, obj) = r.calls[0]
    assert kind == "ok" and y.dtype == torch.float64 and torch.equal(y, 2 * torch.arange(6.0,
                                                            dtype=torch.float64).reshape(2, 3))
    assert isinstance(d["n"], np.ndarray) and d["k"] == 3 and none is None and s == "hi"
    assert lst == [1.5, True] and repr(obj) == "<a object>"
    assert r.sandbox["RLIMIT_FSIZE"] == "0" and "network" in r.sandbox


def test_errors_name_the_student_line():
    r = run("def f(x):\n    y = x + 1\n    return y.nonexistent()\n")
    kind, info = r.calls[0]
    assert kind == "error" and info["type"] == "AttributeError"
    assert info["where"] == "cell 4, line 3: return y.nonexistent()"
    kind, info = run("def f(x):\n    raise NotImplementedError('todo')\n").calls[0]
    assert info["message"].startswith("not implemented yet")
    kind, info = run("import sys\ndef f(x):\n    sys.exit(2)\n").calls[0]
    assert "called exit(2)" in info["message"]
    kind, info = run("def f(x):\n    return undefined_name\n").calls[0]
    assert "answer cells run on their own" in info["message"]


def test_missing_function_and_top_level_errors():
    r = run("import deepscope\ndef g(x):\n    return x\n")
    assert r.calls[0][1]["message"] == "no function named 'f' is defined by the cells"
    assert r.cell_errors[0]["type"] == "ImportError" and r.cell_errors[0]["cell"] == "4"
    r = run("def f(x):\n    return x\nraise ValueError('demo at top level')\n")
    assert r.calls[0][0] == "ok" and "demo at top level" in r.cell_errors[0]["message"]


@pytest.mark.parametrize("statement", ["import deepscope", "from deepscope import saliency",
                                       "import deepscope.saliency", "import captum.attr",
                                       "import importlib; importlib.import_module('deepscope')"])
def test_reference_and_peer_libraries_cannot_be_imported(statement):
    kind, info = run(f"def f(x):\n    {statement}\n    return x\n").calls[0]
    assert kind == "error" and "is not allowed in an answer" in info["message"]


def test_no_deepscope_module_is_reachable_from_the_sandbox():
    kind, names = run("import sys\ndef f(x):\n    return [m for m in sys.modules "
                      "if m.startswith(('deepscope', 'captum'))]\n").calls[0]
    assert kind == "ok" and names == []


def test_a_hang_is_stopped_at_the_limit_and_earlier_calls_count():
    start = time.perf_counter()
    calls = [((torch.ones(2),), {}), ((torch.zeros(2),), {})]
    r = run("def f(x):\n    while x.sum() == 0:\n        pass\n    return x\n", calls,
            time_limit=2.0)
    assert time.perf_counter() - start < 2.0 + 3.0
    assert r.ended == "timeout" and r.calls[0][0] == "ok" and r.calls[1] is None
    assert r.reason == "timed out after 2 s while calling f (check 1: doubles)"
    r = run("while True:\n    pass\n", time_limit=1.0)
    assert r.reason == "timed out after 1 s while running answer cell 4 at its top level"


def test_exiting_the_process_and_native_crashes_are_reported():
    r = run("import os\ndef f(x):\n    os._exit(0)\n")
    assert r.ended == "exited" and "the process ended early (exit code 0)" in r.reason
    r = run("import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n")
    assert r.ended == "exited" and "SIGSEGV" in r.reason


def test_printing_gigabytes_is_cut_off():
    start = time.perf_counter()
    r = run("def f(x):\n    while True:\n        print('spam' * 10000)\n", time_limit=30)
    assert r.ended == "output" and time.perf_counter() - start < 15
    assert "printed more than 1024 KiB" in r.reason and r.output.startswith("spam")


def test_returning_too_much_data_is_refused():
    r = run("def f(x):\n    return torch.zeros(2**20)\n", result_limit=2**20)
    assert r.ended == "result" and "returned more than 1 MiB" in r.reason


def test_garbage_on_the_result_pipe_cannot_confuse_or_block_the_grader():
    spray = ("import os, time\ndef f(x):\n    for fd in range(3, 64):\n        try:\n"
             "            os.write(fd, {payload})\n        except OSError:\n            pass\n"
             "    time.sleep(30)\n")
    r = run(spray.format(payload=r"b'\x00\x00\x00\x04Zbad'"), time_limit=5)
    assert r.ended == "malformed"
    start = time.perf_counter()
    r = run(spray.format(payload=r"b'\x00\x00\x10\x00C'"), time_limit=2)  # a frame never ends
    assert r.ended == "timeout" and time.perf_counter() - start < 5


def test_memory_bombs_fail_inside_the_sandbox():
    kind, info = run("def f(x):\n    return torch.empty(2**38)\n").calls[0]
    assert kind == "error" and "RuntimeError" in info["type"]
    kind, info = run("def f(x):\n    return bytearray(8 * 2**30)\n").calls[0]
    assert kind == "error" and info["type"] == "MemoryError"


def test_files_receive_no_data(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("original")
    r = run(f"def f(x):\n    with open({str(target)!r}, 'a') as fh:\n"
            "        fh.write('x' * 100000)\n    return x\n")
    assert r.calls[0][0] == "error" and r.calls[0][1]["type"] in ("OSError", "PermissionError")
    assert target.read_text() == "original"


def test_network_is_unreachable():
    kind, info = run("import socket\ndef f(x):\n    socket.create_connection(('1.1.1.1', 80), "
                     "timeout=3)\n    return x\n").calls[0]
    assert kind == "error" and "OSError" in info["message"]


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_processes_a_submission_starts_do_not_outlive_it():
    marker = "123.4567"
    r = run(f"import subprocess\ndef f(x):\n    subprocess.Popen(['sleep', '{marker}'])\n"
            "    return x\n")
    assert r.calls[0][0] == "ok"
    deadline = time.time() + 5
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == []


def test_killing_its_parent_does_not_stop_later_questions():
    r = run("import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
            "    return x\n")
    assert r.calls[0] is not None or r.ended != "done"
    assert run("def f(x):\n    return x\n").calls[0][0] == "ok"


def test_a_dead_zygote_is_restarted():
    run("def f(x):\n    return x\n")
    sandbox._ZYGOTE.process.kill()
    sandbox._ZYGOTE.process.wait()
    assert run("def f(x):\n    return 2 * x\n").calls[0][0] == "ok"


def test_encode_refuses_what_cannot_be_transported():
    with pytest.raises(ValueError, match="nested too deeply"):
        _child.encode([[[[[[[[1]]]]]]]], {})
    with pytest.raises(ValueError, match="string keys"):
        _child.encode({1: 2}, {})
    with pytest.raises(ValueError, match="dtype object"):
        _child.encode(np.array([object()]), {})
    tensors = {}
    assert _child.encode(torch.eye(2).to_sparse(), tensors)["tensor"] == "0"
    assert torch.equal(tensors["0"], torch.eye(2))


def test_decoding_rejects_malformed_values():
    with pytest.raises(ValueError):
        sandbox._decode({"weird": 1}, {}, lambda d: True)
    with pytest.raises(ValueError):
        sandbox._decode({"value": [1, 2]}, {}, lambda d: True)
    assert sandbox._exit_text(-9) == "killed by SIGKILL"
    assert sandbox._exit_text(3) == "exit code 3"


def test_fallback_isolation_without_namespaces(tmp_path):
    """Where the kernel forbids namespaces (e.g. some containers), the fallbacks still hold."""
    target = tmp_path / "precious.txt"
    target.write_text("original")
    r = run(f"import socket\ndef f(x):\n    try:\n"
            f"        open({str(target)!r}, 'a').write('x' * 10**5)"
            "\n    except OSError as e:\n        w = type(e).__name__\n    try:\n"
            "        socket.create_connection(('1.1.1.1', 80), timeout=3)\n"
            "    except OSError as e:\n        return w, str(e)\n", namespaces=False)
    assert r.sandbox["network"] == "Python-level socket block"
    assert r.calls[0] == ("ok", ("OSError", "network access is disabled while grading"))
    assert target.read_text() == "original"
    r = run("import os, signal\ndef f(x):\n    while True: pass\n", time_limit=1, namespaces=False)
    assert r.ended == "timeout"
