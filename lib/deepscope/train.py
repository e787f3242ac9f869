"""Training loops of the book: `fit` with a progress bar and a history, `evaluate`, and
`cached_fit`, which trains once per configuration and reuses a verified safetensors checkpoint.

Data is a pair of tensors ``(x, y)`` or any iterable of ``(x, y)`` batches such as a
``torch.utils.data.DataLoader``. A pair of at most `RESIDENT_BYTES` is moved once to the model's
device and batched there (much faster than a DataLoader for the book's small datasets); a larger
one stays where it is and each minibatch is moved when it is used, as a DataLoader's are.

Models whose forward returns a dict, a tuple or an object take ``output=`` (a key, an index or
a function, see `deepscope._forward`) to pick the tensor passed to ``loss_fn`` and used for the
accuracy; without it ``loss_fn`` receives the outputs as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_float, check_int, check_module, check_tensor, model_device
from ._forward import check_output_adapter, select_output

Data = tuple[torch.Tensor, torch.Tensor] | Iterable

#: A pair ``(x, y)`` up to this many bytes is moved to the device once; a larger one is streamed
#: to it one minibatch at a time.
RESIDENT_BYTES = 1 << 28


@dataclass
class History:
    """Per-epoch record of a `fit` run (lists of equal length; test entries only with test data)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    from_cache: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> History:
        return cls(**values)


def _check_pair(data, name: str, fn: str):
    """Return ``(x, y)`` if ``data`` is a pair of tensors, else None (an iterable of batches)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{fn}: `{name}` must be a pair (x, y), got {len(data)} items")
        x = check_tensor(data[0], f"{name}[0]", fn, min_ndim=1, floating=False)
        y = check_tensor(data[1], f"{name}[1]", fn, min_ndim=1, floating=False)
        if len(x) != len(y):
            raise ValueError(
                f"{fn}: `{name}` inputs and targets must have the same length, "
                f"got {len(x)} and {len(y)}"
            )
        if len(x) == 0:
            raise ValueError(f"{fn}: `{name}` is empty")
        return x, y
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            f"{fn}: `{name}` must be a pair (x, y) of tensors or an iterable of (x, y) batches, "
            f"got {type(data).__name__}"
        )
    return None


def _resident(pair, device):
    """Return the pair on ``device`` when it fits `RESIDENT_BYTES` (or is there), else as is."""
    x, y = pair
    size = x.numel() * x.element_size() + y.numel() * y.element_size()
    if size <= RESIDENT_BYTES or (x.device == device and y.device == device):
        return x.to(device), y.to(device)
    return x, y


def _batches(data, pair, batch_size, device, generator=None):
    """Yield (x, y) batches on ``device``: shuffled slices of a pair, or the iterable's batches.
    Each batch is moved to ``device`` when it is yielded (a no-op for data already there)."""
    upload = torch.device(device).type != "cpu"  # copies to the host must block
    if pair is None:
        for xb, yb in data:
            yield xb.to(device, non_blocking=upload), yb.to(device, non_blocking=upload)
        return
    x, y = pair
    n = len(x)
    size = n if batch_size is None else batch_size
    order = (torch.randperm(n, generator=generator).to(x.device) if generator is not None
             else None)
    for start in range(0, n, size):
        idx = slice(start, start + size) if order is None else order[start : start + size]
        yield x[idx].to(device, non_blocking=upload), y[idx].to(device, non_blocking=upload)


def _correct(out, y: torch.Tensor) -> torch.Tensor | None:
    if not isinstance(out, torch.Tensor):
        return None
    if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
        return (out.argmax(1) == y).sum()
    return None


def _pick(out, output, fn: str):
    """Apply the output adapter (None: the outputs as they are, for ``loss_fn`` to read)."""
    return out if output is None else select_output(out, output, fn)


def _make_optimizer(optimizer, params, lr, weight_decay, momentum, fn):
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(params)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(
        f"{fn}: `optimizer` must be 'adam', 'adamw', 'sgd', a torch.optim.Optimizer or a "
        f"callable params -> optimizer, got {optimizer!r}"
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Data, *, loss_fn: Callable | None = None, batch_size: int = 2048,
    output=None,
) -> tuple[float, float]:
    """Return (mean loss, accuracy) of a model on data, in eval mode (restored afterwards).

    Accuracy is NaN when the outputs are not class scores (B, C) with integer targets (B,).
    ``output`` picks the tensor from dict/tuple outputs (a key, an index or a function).
    """
    fn = "evaluate"
    check_module(model, fn)
    output = check_output_adapter(output, fn)
    pair = _check_pair(data, "data", fn)
    loss_fn = loss_fn or nn.functional.cross_entropy
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device)
        count, has_acc = 0, True
        for xb, yb in _batches(data, pair, batch_size, device):
            out = _pick(model(xb), output, fn)
            total_loss += loss_fn(out, yb) * len(xb)
            correct = _correct(out, yb)
            has_acc = has_acc and correct is not None
            if correct is not None:
                total_correct += correct
            count += len(xb)
    finally:
        model.train(was_training)
    acc = float(total_correct) / count if has_acc else float("nan")
    return float(total_loss) / count, acc


def fit(
    model: nn.Module,
    train: Data,
    *,
    test: Data | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: str | torch.optim.Optimizer | Callable = "adam",
    batch_size: int | None = 128,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    loss_fn: Callable | None = None,
    seed: int | None = 0,
    progress: bool = True,
    desc: str = "fit",
    callback: Callable[[int, nn.Module, History], bool | None] | None = None,
    output=None,
) -> History:
    """Train a model with minibatch gradient descent and return its per-epoch history.

    Args:
        model: the module to train (in place, on its own device; its train/eval mode is
            restored at the end).
        train: ``(x, y)`` tensors of shapes (N, ...) and (N,) or (N, ...), or an iterable of
            batches (e.g. a DataLoader).
        test: optional held-out data in the same form, evaluated after each epoch.
        epochs: number of passes over ``train``.
        lr, weight_decay, momentum: optimiser settings (momentum for SGD only).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, an optimizer, or ``params -> optimizer``.
        batch_size: minibatch size for tensor data; None for full-batch gradient descent.
        loss_fn: ``loss_fn(outputs, targets)``; cross-entropy by default.
        seed: seed of the shuffling (None: no shuffling).
        progress: show a tqdm progress bar over epochs.
        desc: the progress bar's label.
        callback: called as ``callback(epoch, model, history)`` after each epoch; return True
            to stop training early.
        output: for a model returning a dict, a tuple or an object, picks the tensor passed to
            ``loss_fn`` and used for the accuracy: a key, an index or a function (see
            `deepscope._forward`); None passes the outputs to ``loss_fn`` as they are (the
            accuracy is then NaN unless they are a tensor).

    Returns:
        A `History` with ``epoch``, ``train_loss``, ``train_acc`` (running means over the
        epoch's batches) and, with ``test``, ``test_loss`` and ``test_acc``.
    """
    fn = "fit"
    check_module(model, fn)
    output = check_output_adapter(output, fn)
    pair = _check_pair(train, "train", fn)
    epochs = check_int(epochs, "epochs", fn, minimum=0)
    lr = check_float(lr, "lr", fn, positive=True)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", fn)
    if test is not None:
        _check_pair(test, "test", fn)
    device = model_device(model)
    if pair is not None:
        pair = _resident(pair, device)
    loss_fn = loss_fn or nn.functional.cross_entropy
    opt = _make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum, fn)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    history = History()
    was_training = model.training
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    try:
        for epoch in bar:
            model.train()
            total_loss = torch.zeros((), device=device)
            total_correct = torch.zeros((), device=device)
            count, has_acc = 0, True
            for xb, yb in _batches(train, pair, batch_size, device, generator):
                out = _pick(model(xb), output, fn)
                loss = loss_fn(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.detach() * len(xb)
                correct = _correct(out, yb)
                has_acc = has_acc and correct is not None
                if correct is not None:
                    total_correct += correct
                count += len(xb)
            history.epoch.append(epoch)
            history.train_loss.append(float(total_loss) / count)
            history.train_acc.append(float(total_correct) / count if has_acc else float("nan"))
            postfix = {"loss": f"{history.train_loss[-1]:.4f}"}
            if test is not None:
                test_loss, test_acc = evaluate(model, test, loss_fn=loss_fn, output=output)
                history.test_loss.append(test_loss)
                history.test_acc.append(test_acc)
                postfix["test_acc"] = f"{test_acc:.3f}"
            bar.set_postfix(postfix)
            if callback is not None and callback(epoch, model, history):
                break
    finally:
        bar.close()
        model.train(was_training)
    return history


# --------------------------------------------------------------------------------------------
# Cached training

#: Bump when the meaning of a cache key changes, so old checkpoints are not reused.
CACHE_FORMAT = "1"


def default_cache_dir() -> Path:
    """Return the checkpoint cache folder: ``DEEPSCOPE_CACHE``, else ``$XDG_CACHE_HOME/deepscope``,
    else ``~/.cache/deepscope``. Never inside the package."""
    env = os.environ.get("DEEPSCOPE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepscope"


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return _tensor_digest([value])
    if isinstance(value, (tuple, list)) and value and all(
        isinstance(v, torch.Tensor) for v in value
    ):
        return _tensor_digest(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return repr(value)


def _tensor_digest(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_key(model: nn.Module, train: Data, **fit_kwargs) -> str:
    """Return the sha256 key of a training configuration: the architecture (its repr), the
    initial weights and buffers, the training data, and every keyword of `fit`."""
    state = model.state_dict()
    pair = _check_pair(train, "train", "cached_fit")
    if pair is None:
        raise TypeError("cached_fit: `train` must be a pair (x, y) of tensors to be hashed")
    parts = [
        CACHE_FORMAT,
        repr(model),
        _tensor_digest([state[k] for k in sorted(state)]) + ",".join(sorted(state)),
        _tensor_digest(pair),
        repr(sorted((k, _describe(v)) for k, v in fit_kwargs.items())),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _save_checkpoint(path: Path, model: nn.Module, key: str, history: History) -> None:
    """Write a safetensors checkpoint atomically: a temp file in the same folder, then rename."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "deepscope_cache": CACHE_FORMAT,
        "key": key,
        "payload_sha256": _tensor_digest([state[k] for k in sorted(state)]),
        "history": json.dumps(history.to_dict()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, key: str) -> tuple[dict, History]:
    """Read and verify a checkpoint; raise ``ValueError`` if it is truncated, altered or foreign."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"unreadable checkpoint ({err})") from err
    if metadata.get("key") != key or metadata.get("deepscope_cache") != CACHE_FORMAT:
        raise ValueError("checkpoint belongs to another configuration")
    if _tensor_digest([state[k] for k in sorted(state)]) != metadata.get("payload_sha256"):
        raise ValueError("checkpoint payload does not match its sha256")
    return state, History.from_dict(json.loads(metadata["history"]))


def cached_fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    cache_dir: str | Path | None = None,
    name: str = "model",
    **fit_kwargs,
) -> History:
    """Train ``model`` with `fit` once per configuration; later calls load the checkpoint.

    The key (`cache_key`) covers the architecture, the initial weights (so the seed that built
    the model), the data and the `fit` keywords. The checkpoint is a safetensors file written
    atomically (temp file + rename) whose metadata holds the key, the history and a sha256 of the
    weights; a truncated, altered or foreign file is detected on load, reported with a warning and
    retrained, never half-loaded. No pickle is ever loaded.

    Args:
        model: a freshly built model; trained (or loaded) in place.
        train: ``(x, y)`` tensors.
        cache_dir: the cache folder (default `default_cache_dir`).
        name: a readable prefix of the checkpoint file name.
        **fit_kwargs: passed to `fit` (``test=``, ``epochs=``, ``lr=``...).

    Returns:
        The `History` of the training run, with ``from_cache=True`` when it was loaded.
    """
    check_module(model, "cached_fit")
    key = cache_key(model, train, **fit_kwargs)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{name}-{key[:16]}.safetensors"
    if path.exists():
        try:
            state, history = _load_checkpoint(path, key)
        except ValueError as err:
            warnings.warn(f"cached_fit: {path} is invalid ({err}); retraining", stacklevel=2)
        else:
            model.load_state_dict(state, strict=True)
            history.from_cache = True
            return history
    history = fit(model, train, **fit_kwargs)
    _save_checkpoint(path, model, key, history)
    return history
