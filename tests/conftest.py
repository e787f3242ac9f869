"""Shared test set-up: threads as the runner asks, a private checkpoint cache per test."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
if os.environ.get("DEEPSCOPE_THREADS"):
    torch.set_num_threads(int(os.environ["DEEPSCOPE_THREADS"]))

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own checkpoint cache, so tests never share or corrupt one."""
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
