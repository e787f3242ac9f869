"""`cached_fit` keys on everything that determines the trained weights (code included) and fails
soft: each test edits one thing a researcher edits between two runs and requires a retrain (the
control: the same edit undone, or an identical copy, must hit the cache)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from deepscope import CacheWarning, collapse, train
from torch import nn

G = torch.Generator().manual_seed(0)
X = torch.randn(96, 6, generator=G)
Y = torch.arange(96) % 3
FIT = dict(epochs=2, batch_size=32, progress=False)


def build(cls=None, seed=0):
    torch.manual_seed(seed)
    return (cls or Net)()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def fitted(model, tmp_path, **kwargs):
    return train.cached_fit(model, (X, Y), cache_dir=tmp_path, **FIT, **kwargs)


def test_an_identical_setup_hits_and_display_options_do_not_count(tmp_path):
    first = fitted(build(), tmp_path)
    assert not first.from_cache
    again = train.cached_fit(build(), (X, Y), cache_dir=tmp_path, epochs=2, batch_size=32,
                             progress=True, desc="another label")
    assert again.from_cache and again.train_loss == first.train_loss


def _net_class(forward_source: str):
    """A class named Net whose forward is ``forward_source``: what re-running an edited
    notebook cell makes (same name, same qualified name, new code)."""
    namespace = {"nn": nn, "torch": torch, "__name__": "__main__"}
    exec(textwrap.dedent(f"""
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(6, 8)
                self.head = nn.Linear(8, 3)

            def forward(self, x):
                {forward_source}
    """), namespace)
    return namespace["Net"]


def test_editing_forward_retrains(tmp_path):
    relu = _net_class("return self.head(torch.relu(self.body(x)))")
    assert not fitted(build(relu), tmp_path).from_cache
    assert fitted(build(_net_class("return self.head(torch.relu(self.body(x)))")),
                  tmp_path).from_cache  # control: the same code, a new class object
    tanh = _net_class("return self.head(torch.tanh(self.body(x)))")
    history = fitted(build(tanh), tmp_path)
    assert not history.from_cache
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_editing_a_helper_that_forward_calls_retrains(tmp_path):
    namespace = {"nn": nn, "torch": torch, "__name__": "__main__"}
    source = """
        def act(x):
            return torch.relu(x) {edit}

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(6, 8)
                self.head = nn.Linear(8, 3)

            def forward(self, x):
                return self.head(act(self.body(x)))
    """
    exec(textwrap.dedent(source.format(edit="")), namespace)
    assert not fitted(build(namespace["Net"]), tmp_path).from_cache
    exec(textwrap.dedent(source.format(edit="* 2")), namespace)
    assert not fitted(build(namespace["Net"]), tmp_path).from_cache


def test_editing_a_lambda_loss_body_retrains(tmp_path):
    assert not fitted(build(), tmp_path, loss_fn=lambda out, y: F.cross_entropy(out, y)).from_cache
    assert fitted(build(), tmp_path, loss_fn=lambda out, y: F.cross_entropy(out, y)).from_cache
    smoothed = lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1)  # noqa: E731
    assert smoothed.__qualname__.endswith("<lambda>")  # the same name as before: body counts
    assert not fitted(build(), tmp_path, loss_fn=smoothed).from_cache


def test_changing_an_optimizer_lambda_or_its_closure_retrains(tmp_path):
    def sgd(lr):
        return lambda params: torch.optim.SGD(params, lr=lr)

    assert not fitted(build(), tmp_path, optimizer=sgd(0.1)).from_cache
    assert fitted(build(), tmp_path, optimizer=sgd(0.1)).from_cache
    assert not fitted(build(), tmp_path, optimizer=sgd(0.05)).from_cache  # closure value
    momentum = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)  # noqa: E731
    assert not fitted(build(), tmp_path, optimizer=momentum).from_cache  # body


def test_freezing_a_layer_retrains_and_never_overwrites_frozen_weights(tmp_path):
    assert not fitted(build(), tmp_path).from_cache
    frozen = build()
    frozen.body.requires_grad_(False)
    initial = frozen.body.weight.detach().clone()
    assert not fitted(frozen, tmp_path).from_cache
    assert torch.equal(frozen.body.weight, initial)
    again = build()
    again.body.requires_grad_(False)
    assert fitted(again, tmp_path).from_cache  # control: the same frozen setup hits
    assert torch.equal(again.body.weight, initial) and not again.body.weight.requires_grad


def test_a_callable_instance_hits_the_cache_on_a_second_call(tmp_path):
    tracker = collapse.CollapseTracker(X, Y, every=1, keep_per_class=2)
    first = fitted(build(), tmp_path, callback=tracker)
    assert not first.from_cache and len(tracker.history.epoch) == 2
    fresh = collapse.CollapseTracker(X, Y, every=1, keep_per_class=2)
    assert fitted(build(), tmp_path, callback=fresh).from_cache
    other = collapse.CollapseTracker(X, Y, every=2, keep_per_class=2)  # another schedule
    assert not fitted(build(), tmp_path, callback=other).from_cache


class Stopper:
    """A user's callable object: keys by its class code and its attributes."""

    def __init__(self, patience):
        self.patience = patience

    def __call__(self, epoch, model, history):
        return epoch >= self.patience


def test_user_callable_objects_key_by_state(tmp_path):
    assert not fitted(build(), tmp_path, callback=Stopper(1)).from_cache
    assert fitted(build(), tmp_path, callback=Stopper(1)).from_cache
    assert not fitted(build(), tmp_path, callback=Stopper(2)).from_cache


def test_what_cannot_be_hashed_asks_for_an_explicit_key(tmp_path):
    lock = threading.Lock()

    def loss(out, y):
        with lock:
            return F.cross_entropy(out, y)

    with pytest.raises(TypeError, match=r"cached_fit: cannot key the cache soundly: `loss_fn` "
                                        r"closure lock is a _thread.lock.*pass `key=`"):
        fitted(build(), tmp_path, loss_fn=loss)
    assert not list(tmp_path.glob("*"))
    assert not fitted(build(), tmp_path, loss_fn=loss, key="locked-ce").from_cache
    assert fitted(build(), tmp_path, loss_fn=loss, key="locked-ce").from_cache
    assert not fitted(build(), tmp_path, loss_fn=loss, key="locked-ce-v2").from_cache
    with pytest.raises(TypeError, match="`key` must be a string"):
        fitted(build(), tmp_path, key=3)


def test_a_folder_that_cannot_be_written_warns_and_returns_the_history(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    model = build()
    with pytest.warns(CacheWarning, match="could not write the checkpoint"):
        history = train.cached_fit(model, (X, Y), cache_dir=blocker, **FIT)
    assert not history.from_cache and len(history.train_loss) == 2
    reference = build()
    train.fit(reference, (X, Y), **FIT)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))


def test_a_full_disk_warns_returns_the_history_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(state, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train, "save_file", full)
    with pytest.warns(CacheWarning, match="No space left on device"):
        history = fitted(build(), tmp_path)
    assert len(history.train_loss) == 2
    assert not list(tmp_path.iterdir())


def test_metadata_without_history_is_retrained_with_a_warning(tmp_path):
    from safetensors.torch import load_file, save_file

    fitted(build(), tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    del metadata["history"]
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.warns(CacheWarning, match="no valid history"):
        history = fitted(build(), tmp_path)
    assert not history.from_cache
    assert fitted(build(), tmp_path).from_cache  # the rewrite is whole again


WRITER = """
import sys, time
from pathlib import Path
import torch
from deepscope import train

def slow_save(state, filename, metadata=None):
    Path(filename).write_bytes(b"half a checkpoint")
    print("writing", flush=True)
    time.sleep(120)

train.save_file = slow_save
train._save_checkpoint(Path(sys.argv[1]) / "m-0123456789abcdef.safetensors",
                       torch.nn.Linear(2, 2), "k" * 64, train.History())
"""


def test_a_writer_killed_mid_write_leaves_a_temp_file_that_is_cleaned(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    (orphan,) = tmp_path.glob("*.tmp")
    assert train.clean_stale_temp_files(tmp_path) == []  # too young: maybe a slow writer
    own = tmp_path / f"{train._temp_prefix(tmp_path / 'x.safetensors')}live.tmp"
    own.write_bytes(b"a write in progress in this process")
    later = time.time() + 2 * train.STALE_SECONDS
    assert train.clean_stale_temp_files(tmp_path, now=later) == [orphan]  # the writer is dead
    assert own.exists()  # this process is alive: its temp file is kept
    old = time.time() - 2 * 86400
    os.utime(own, (old, old))
    fitted(build(), tmp_path)  # every cached_fit sweeps the folder
    assert not own.exists() and not list(tmp_path.glob("*.tmp"))


def test_the_name_cannot_leave_the_cache_folder(tmp_path):
    with pytest.raises(ValueError, match="`name` must be letters, digits"):
        fitted(build(), tmp_path, name="../escape")
