"""Shared test set-up: threads as the runner asks, a private checkpoint cache per test."""

from __future__ import annotations

import os
import signal

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
if os.environ.get("DEEPSCOPE_THREADS"):
    torch.set_num_threads(int(os.environ["DEEPSCOPE_THREADS"]))

# Ctrl-C tests need Python's own SIGINT handler. A shell starts background jobs with SIGINT
# ignored, and Python then leaves it ignored (no KeyboardInterrupt ever): give it back, to this
# process and, through exec's reset of caught signals, to the processes the tests start.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def cnn():
    """A small float64 CNN on 8x8 single-channel images (seeded), for attribution tests."""
    from deepscope import models

    torch.manual_seed(0)
    return models.small_cnn(channels=(4, 8, 8)).double()


@pytest.fixture
def images():
    """Four seeded float64 images (4, 1, 8, 8) in [0, 1]."""
    torch.manual_seed(1)
    return torch.rand(4, 1, 8, 8, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own checkpoint cache, so tests never share or corrupt one."""
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
