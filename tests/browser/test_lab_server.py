"""The browser test's private JupyterLab goes away with its kernels, also when a check fails."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from tests.browser import lab

pytestmark = pytest.mark.browser


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process ids from /proc")
def test_server_and_kernels_stop_when_the_check_fails(tmp_path):
    (tmp_path / "book").mkdir()
    with pytest.raises(RuntimeError, match="a check failed"), \
            lab.lab_server(tmp_path / "book", tmp_path / "lab") as server:
        assert server.url.startswith("http://127.0.0.1:") and len(server.token) == 48
        status = json.loads(server.api("/api/status"))
        kernel = json.loads(server.api("/api/kernels", method="POST", timeout=60))
        assert kernel["name"] == "python3" and "started" in status
        deadline = time.monotonic() + 60
        while not (kernels := [p for p in lab._descendants(server.process.pid)
                               if str(server.runtime).encode() in
                               open(f"/proc/{p}/cmdline", "rb").read()]):
            assert time.monotonic() < deadline, "the kernel process never appeared"
            time.sleep(0.2)
        raise RuntimeError("a check failed")
    assert server.process.poll() is not None
    assert not [pid for pid in kernels if _alive(pid)], kernels
    with pytest.raises(OSError):  # nobody answers on that port any more
        server.api("/api/status", timeout=2)


def test_a_port_taken_before_the_server_binds_it_is_retried(monkeypatch, tmp_path):
    (tmp_path / "book").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = [busy.getsockname()[1], lab.free_port()]
        monkeypatch.setattr(lab, "free_port", lambda: ports.pop(0))
        with lab.lab_server(tmp_path / "book", tmp_path / "lab") as server:
            assert not server.url.endswith(f":{busy.getsockname()[1]}")
            assert json.loads(server.api("/api/status"))
        assert ports == []


def test_a_missing_chromium_is_reported_not_downloaded(monkeypatch):
    monkeypatch.setattr(lab, "CHROMIUM", "/nonexistent/chromium")
    assert lab.find_chromium(install=False) == (None, "/nonexistent/chromium is missing")
    monkeypatch.setattr(lab.shutil, "which", lambda name: None)  # no apt-get
    path, why = lab.find_chromium(install=True)
    assert path is None and "cannot be installed here" in why


def test_kernels_draw_inline_figures_with_one_thread(monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("DEEPSCOPE_THREADS", raising=False)
    env = lab.kernel_env(tmp_path)
    assert "MPLBACKEND" not in env and env["DEEPSCOPE_THREADS"] == "1"
