import os
from pathlib import Path

import pytest
import torch
from deepscope import data, models, train
from torch.utils.data import DataLoader, TensorDataset


@pytest.fixture(scope="module")
def digits():
    return data.digits("train"), data.digits("test")


def _model(seed=0):
    torch.manual_seed(seed)
    return models.mlp(64, (32,), 10)


def test_fit_learns_and_records_history(digits):
    (x, y), test = digits
    net = _model()
    history = train.fit(net, (x, y), test=test, epochs=8, lr=1e-2, progress=False)
    assert history.epoch == list(range(1, 9))
    assert len(history.train_loss) == len(history.test_acc) == 8
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.test_acc[-1] > 0.85
    assert train.evaluate(net, test)[1] == pytest.approx(history.test_acc[-1])


def test_fit_is_deterministic_and_restores_mode(digits):
    (x, y), _ = digits
    nets = [_model(), _model()]
    nets[1].eval()
    for net in nets:
        train.fit(net, (x, y), epochs=2, seed=5, progress=False)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    assert nets[0].training and not nets[1].training


def test_fit_full_batch_sgd_dataloader_and_callback(digits):
    (x, y), _ = digits
    h = train.fit(_model(), (x, y), epochs=3, batch_size=None, optimizer="sgd", lr=0.1,
                  progress=False)
    assert len(h.train_loss) == 3
    loader = DataLoader(TensorDataset(x, y), batch_size=256)
    h = train.fit(_model(), loader, test=loader, epochs=2, optimizer="adamw", seed=None,
                  progress=False)
    assert len(h.test_loss) == 2
    stop_after_two = lambda epoch, model, history: epoch == 2
    h = train.fit(_model(), (x, y), epochs=10, callback=stop_after_two, progress=False)
    assert h.epoch == [1, 2]
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    train.fit(net, (x, y), epochs=1, optimizer=opt, progress=False)
    train.fit(net, (x, y), epochs=1, progress=False,
              optimizer=lambda params: torch.optim.RMSprop(params, lr=1e-3))


def test_fit_regression_reports_nan_accuracy():
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [2.0], [-1.0]])
    net = torch.nn.Linear(3, 1)
    h = train.fit(net, (x, y), epochs=300, lr=0.05, loss_fn=torch.nn.functional.mse_loss,
                  progress=False, test=(x, y))
    assert h.train_loss[-1] < 0.05
    assert h.train_acc[-1] != h.train_acc[-1]  # NaN: accuracy is undefined for regression


@pytest.mark.parametrize("train_data, kwargs, err, msg", [
    ("xy", {"epochs": -1}, ValueError, "`epochs` must be >= 0"),
    ("xy", {"lr": 0.0}, ValueError, "`lr` must be > 0"),
    ("xy", {"optimizer": "lion"}, ValueError, "`optimizer` must be 'adam'"),
    ((torch.zeros(3, 64), torch.zeros(4, dtype=torch.long)), {}, ValueError,
     "same length, got 3 and 4"),
    ((torch.zeros(3, 64),), {}, ValueError, "must be a pair"),
    (torch.zeros(3, 64), {}, TypeError, "must be a pair \\(x, y\\) of tensors or an iterable"),
    ((torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)), {}, ValueError, "is empty"),
])
def test_fit_bad_input(digits, train_data, kwargs, err, msg):
    (x, y), _ = digits
    train_data = (x, y) if isinstance(train_data, str) else train_data
    with pytest.raises(err, match=msg):
        train.fit(_model(), train_data, progress=False, **kwargs)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        train.fit("model", (x, y))


def test_cached_fit_trains_once_then_loads(digits, tmp_path):
    (x, y), _ = digits
    first = _model(1)
    h1 = train.cached_fit(first, (x, y), epochs=2, progress=False, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and not h1.from_cache
    second = _model(1)
    h2 = train.cached_fit(second, (x, y), epochs=2, progress=False, cache_dir=tmp_path)
    assert h2.from_cache and h2.train_loss == h1.train_loss
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    # A different seed, data or setting is a different configuration.
    train.cached_fit(_model(2), (x, y), epochs=2, progress=False, cache_dir=tmp_path)
    train.cached_fit(_model(1), (x, y), epochs=3, progress=False, cache_dir=tmp_path)
    train.cached_fit(_model(1), (x[:100], y[:100]), epochs=2, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_cached_fit_default_dir_comes_from_env(digits, tmp_path, monkeypatch):
    (x, y), _ = digits
    monkeypatch.setenv("DEEPSCOPE_CACHE", str(tmp_path / "c"))
    train.cached_fit(_model(), (x, y), epochs=1, progress=False, name="env")
    assert len(list((tmp_path / "c").glob("env-*.safetensors"))) == 1
    monkeypatch.delenv("DEEPSCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert train.default_cache_dir() == tmp_path / "xdg" / "deepscope"


def _corrupt_truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_flip_weight_byte(path: Path):
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # inside the tensor payload, the header stays valid
    path.write_bytes(bytes(raw))


def _corrupt_garbage(path: Path):
    path.write_bytes(b"not a safetensors file")


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_flip_weight_byte,
                                     _corrupt_garbage])
def test_cached_fit_detects_corruption_and_retrains(digits, tmp_path, corrupt):
    (x, y), _ = digits
    reference = _model(3)
    train.cached_fit(reference, (x, y), epochs=2, progress=False, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    corrupt(path)
    again = _model(3)
    with pytest.warns(UserWarning, match="is invalid .*retraining"):
        h = train.cached_fit(again, (x, y), epochs=2, progress=False, cache_dir=tmp_path)
    assert not h.from_cache
    for a, b in zip(reference.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # retrained deterministically, never half-loaded
    assert train.cached_fit(_model(3), (x, y), epochs=2, progress=False,
                            cache_dir=tmp_path).from_cache


def test_checkpoint_of_another_config_is_rejected(digits, tmp_path):
    (x, y), _ = digits
    net = _model()
    train.cached_fit(net, (x, y), epochs=1, progress=False, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    with pytest.raises(ValueError, match="another configuration"):
        train._load_checkpoint(path, "0" * 64)


def test_interrupted_write_leaves_no_partial_file(digits, tmp_path, monkeypatch):
    (x, y), _ = digits
    train.cached_fit(_model(4), (x, y), epochs=1, progress=False, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    good = path.read_bytes()

    def failing_save(state, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        train._save_checkpoint(path, _model(5), "key", train.History())
    assert path.read_bytes() == good  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left behind


def test_cache_key_needs_tensor_data():
    loader = DataLoader(TensorDataset(torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match="must be a pair \\(x, y\\) of tensors to be hashed"):
        train.cache_key(_model(), loader)
    key = train.cache_key(_model(), (torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)),
                          test=(torch.zeros(2, 64), torch.zeros(2, dtype=torch.long)),
                          loss_fn=torch.nn.functional.cross_entropy, lr=1e-3)
    assert len(key) == 64


def test_evaluate_and_cached_fit_bad_input(digits):
    (x, y), _ = digits
    with pytest.raises(TypeError, match="evaluate: `model` must be a torch.nn.Module"):
        train.evaluate(None, (x, y))
    with pytest.raises(ValueError, match="evaluate: `data` inputs and targets must have the same"):
        train.evaluate(_model(), (x, y[:10]))
    with pytest.raises(TypeError, match="cached_fit: `model` must be a torch.nn.Module"):
        train.cached_fit("net", (x, y))


def test_cached_fit_handles_batch_norm_buffers(digits, tmp_path):
    """0-d buffers (BatchNorm's num_batches_tracked) are hashed and restored too."""
    (x, y), _ = digits

    def build():
        torch.manual_seed(0)
        return models.mlp(64, (16,), 10, batch_norm=True)

    first = build()
    train.cached_fit(first, (x, y), epochs=1, progress=False, cache_dir=tmp_path)
    second = build()
    assert train.cached_fit(second, (x, y), epochs=1, progress=False,
                            cache_dir=tmp_path).from_cache
    assert int(second.bn1.num_batches_tracked) == int(first.bn1.num_batches_tracked) > 0
    torch.testing.assert_close(second.bn1.running_mean, first.bn1.running_mean, rtol=0, atol=0)
