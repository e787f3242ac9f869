import random

import deepscope
import numpy as np
import pytest
import torch
from deepscope import device as dev

from tests.conftest import requires_cuda


def test_auto_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_DEVICE", raising=False)
    monkeypatch.setattr(dev, "_available", lambda kind: kind == "cpu")
    assert dev.get_device() == torch.device("cpu")


def test_auto_device_order_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_DEVICE", raising=False)
    monkeypatch.setattr(dev, "_available", lambda kind: kind in ("cuda", "mps", "cpu"))
    assert dev.get_device().type == "cuda"
    monkeypatch.setattr(dev, "_available", lambda kind: kind in ("mps", "cpu"))
    assert dev.get_device().type == "mps"


def test_env_overrides_auto_choice_and_argument_overrides_env(monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    monkeypatch.setenv("DEEPSCOPE_DEVICE", "nonsense")
    assert dev.get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'nonsense'"):
        dev.get_device()


def test_unavailable_and_bad_devices_raise(monkeypatch):
    monkeypatch.setattr(dev, "_available", lambda kind: kind == "cpu")
    with pytest.raises(ValueError, match="'cuda' was requested but is not available"):
        dev.get_device("cuda")
    with pytest.raises(TypeError, match="expected a device name or torch.device, got int"):
        dev.get_device(3)


def test_mps_probe_is_safe():
    assert isinstance(dev._available("mps"), bool)
    assert dev._available("cpu") is True


@requires_cuda
def test_cuda_is_chosen_when_present(monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_DEVICE", raising=False)
    assert dev.get_device().type == "cuda"
    with pytest.raises(ValueError, match="CUDA device"):
        dev.get_device(f"cuda:{torch.cuda.device_count()}")


def test_seed_everything_makes_all_generators_repeat():
    draws = []
    for _ in range(2):
        deepscope.seed_everything(7)
        draws.append((random.random(), np.random.rand(), torch.rand(5)))
    assert draws[0][0] == draws[1][0] and draws[0][1] == draws[1][1]
    assert torch.equal(draws[0][2], draws[1][2])


@pytest.mark.parametrize("bad, err", [(1.5, TypeError), (True, TypeError), (-1, ValueError)])
def test_seed_everything_rejects_bad_seeds(bad, err):
    with pytest.raises(err, match="seed"):
        deepscope.seed_everything(bad)


def test_default_threads_reads_env(monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_THREADS", "3")
    assert dev.default_threads() == 3
    monkeypatch.delenv("DEEPSCOPE_THREADS")
    assert 1 <= dev.default_threads() <= 8
    for bad in ("zero", "0"):
        monkeypatch.setenv("DEEPSCOPE_THREADS", bad)
        with pytest.raises(ValueError, match="DEEPSCOPE_THREADS must be a positive int"):
            dev.default_threads()


def test_setup_notebook_seeds_sets_threads_and_reports(monkeypatch, capsys):
    monkeypatch.setenv("DEEPSCOPE_THREADS", "1")
    monkeypatch.setenv("DEEPSCOPE_FULL", "1")
    monkeypatch.setenv("DEEPSCOPE_DEVICE", "cpu")
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    pools_before = {p["prefix"]: p["num_threads"] for p in threadpool_info()}
    try:
        ctx = deepscope.setup_notebook(seed=3)
        a = torch.rand(3)
        deepscope.setup_notebook(seed=3, quiet=True, style=False)
        assert torch.equal(a, torch.rand(3))
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
        threadpool_limits(limits=pools_before)
    assert ctx.full is True and ctx.seed == 3 and ctx.threads == 1
    assert ctx.device == torch.device("cpu")
    line = capsys.readouterr().out
    assert "device: cpu" in line and "threads: 1" in line and "mode: full" in line


def test_full_mode_defaults_to_quick(monkeypatch):
    monkeypatch.delenv("DEEPSCOPE_FULL", raising=False)
    assert dev.full_mode() is False
    monkeypatch.setenv("DEEPSCOPE_FULL", "yes")
    assert dev.full_mode() is True


def test_cost_switch_quick_full_and_smoke(monkeypatch):
    sizes = {}
    for value in ("", "1", "smoke"):
        monkeypatch.setenv("DEEPSCOPE_FULL", value)
        ctx = deepscope.setup_notebook(quiet=True, style=False)
        sizes[value] = (ctx.full, ctx.smoke, ctx.pick(quick=10, full=100), ctx.iters(500))
    assert sizes[""] == (False, False, 10, 500)
    assert sizes["1"] == (True, False, 100, 500)
    # Smoke: the full sizes, but a handful of iterations of every loop.
    assert sizes["smoke"] == (True, True, 100, dev.SMOKE_ITERS)
    assert ctx.iters(1) == 1
    with pytest.raises(ValueError, match="`n` must be an int >= 0, got 2.5"):
        ctx.iters(2.5)


def test_lazy_submodules():
    assert deepscope.data.digits is not None
    assert "saliency" in dir(deepscope)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepscope.nope  # noqa: B018


def test_seed_env_replaces_notebook_seed(monkeypatch):
    monkeypatch.setenv("DEEPSCOPE_SEED", "11")
    assert deepscope.setup_notebook(seed=0, quiet=True, style=False).seed == 11
    monkeypatch.setenv("DEEPSCOPE_SEED", "eleven")
    with pytest.raises(ValueError, match="DEEPSCOPE_SEED must be an int, got 'eleven'"):
        deepscope.setup_notebook(quiet=True, style=False)
