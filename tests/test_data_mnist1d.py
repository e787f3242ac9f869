"""MNIST-1D loader (deepscope.data.mnist1d): the published data, offline, global RNGs untouched."""

from __future__ import annotations

import random
import socket

import mnist1d.data
import numpy as np
import pytest
import torch
from deepscope import _mnist1d, data


def _global_states():
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def _assert_same_states(a, b):
    assert a[0] == b[0]
    assert all(np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v
               for u, v in zip(a[1], b[1]))
    assert torch.equal(a[2], b[2])


def test_the_published_split_shapes_and_scaling():
    x, y = data.mnist1d("train")
    xt, yt = data.mnist1d("test")
    xa, ya = data.mnist1d("all", flatten=True)
    assert x.shape == (4000, 1, 40) and xt.shape == (1000, 1, 40) and xa.shape == (5000, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(xa, torch.cat([x, xt]).flatten(1)) and torch.equal(ya, torch.cat([y, yt]))
    # The generator standardises the whole set; 500 signals per class before its 80/20 split.
    assert abs(float(xa.mean())) < 1e-4 and abs(float(xa.std()) - 1) < 1e-3
    assert torch.bincount(ya).tolist() == [500] * 10
    assert torch.bincount(yt).min() >= 80
    x64, _ = data.mnist1d("test", n=7, dtype=torch.float64)
    assert x64.shape == (7, 1, 40) and x64.dtype == torch.float64
    assert torch.equal(x64.float(), xt[:7])


def test_the_data_is_the_registered_generation_and_the_cache_cannot_be_corrupted():
    x, y = data.mnist1d("train")
    arrays = _mnist1d._generate(_mnist1d._settings("t", 42, 5000, {}))
    assert _mnist1d.fingerprint([arrays[k] for k in ("x", "y", "x_test", "y_test")]) == \
        _mnist1d.DEFAULT_SHA256
    x[:] = 0  # the caller owns its copy
    again, _ = data.mnist1d("train")
    assert float(again.abs().sum()) > 0
    with pytest.raises(ValueError, match="read-only"):
        arrays["x"][0, 0] = 1.0


def test_global_random_states_are_left_unchanged():
    _mnist1d._generate.cache_clear()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    before = _global_states()
    x, _ = data.mnist1d("train", seed=7, num_samples=200)  # forces a fresh generation
    assert x.shape == (160, 1, 40)
    _assert_same_states(before, _global_states())
    # Control: the package's own generator does reseed NumPy's and Python's global generators.
    mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    after = _global_states()
    assert not np.array_equal(before[1][1], after[1][1]) and before[0] != after[0]


def test_global_random_states_are_restored_when_the_generator_fails(monkeypatch):
    _mnist1d._generate.cache_clear()

    def broken(args):
        np.random.seed(0), random.seed(0)
        raise RuntimeError("generator failed")

    monkeypatch.setattr(mnist1d.data, "make_dataset", broken)
    np.random.seed(5), random.seed(5)
    before = _global_states()
    with pytest.raises(RuntimeError, match="generator failed"):
        data.mnist1d(seed=11, num_samples=100)
    _assert_same_states(before, _global_states())


def test_generation_is_offline_and_never_uses_the_download_path(monkeypatch):
    _mnist1d._generate.cache_clear()

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(mnist1d.data.requests, "get", no_network)
    x, y = data.mnist1d("test", seed=3, num_samples=300)
    assert x.shape == (60, 1, 40) and len(y) == 60


def test_a_generator_that_makes_other_data_is_refused(monkeypatch):
    _mnist1d._generate.cache_clear()
    real = mnist1d.data.make_dataset

    def drifted(args):  # a later release that changed one value of the published data
        out = real(args)
        out["x"] = out["x"].copy()
        out["x"][0, 0] += 1e-3
        return out

    monkeypatch.setattr(mnist1d.data, "make_dataset", drifted)
    with pytest.raises(data.DataIntegrityError, match="mnist1d: the installed mnist1d package"):
        data.mnist1d("train")
    x, _ = data.mnist1d("train", verify=False)  # the caller may accept it explicitly
    assert x.shape == (4000, 1, 40)
    _mnist1d._generate.cache_clear()


def test_settings_change_the_data_and_bad_arguments_are_named():
    x, _ = data.mnist1d("test", num_samples=500, seed=1)
    other, _ = data.mnist1d("test", num_samples=500, seed=2)
    longer, _ = data.mnist1d("test", num_samples=500, seed=1, final_seq_length=60)
    shuffled, _ = data.mnist1d("test", num_samples=500, seed=1, shuffle_seq=True)
    assert x.shape == (100, 1, 40) and longer.shape == (100, 1, 60)
    assert not torch.equal(x, other) and not torch.equal(x, shuffled)
    # Shuffling the positions keeps each signal's values, only their order changes.
    assert torch.allclose(x.sort(-1).values, shuffled.sort(-1).values, atol=1e-5)
    with pytest.raises(TypeError, match="mnist1d: unknown generator settings \\['url'\\]"):
        data.mnist1d(url="https://example.org/data.pkl")
    with pytest.raises(ValueError, match="mnist1d: `split` must be one of"):
        data.mnist1d("validation")
    with pytest.raises(ValueError, match="mnist1d: `n` must be at most 1000"):
        data.mnist1d("test", n=1001)
    with pytest.raises(TypeError, match="mnist1d: `seed` must be an int"):
        data.mnist1d(seed=1.5)


def test_templates_are_the_ten_digits():
    templates = data.mnist1d_templates()
    assert templates["x"].shape == (10, 12) and list(templates["y"]) == list(range(10))
