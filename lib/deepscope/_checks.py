"""Input validation shared by the library: errors that say what was expected and what was given.

Every public function validates its input with these helpers so that the messages read the same
across chapters: ``"<function>: `<argument>` must be <expected>, got <given>"``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn


def _shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


def check_tensor(
    x,
    name: str,
    fn: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    min_ndim: int | None = None,
    floating: bool = True,
    like: str | None = None,
) -> torch.Tensor:
    """Return ``x`` after checking it is a tensor of the expected rank and dtype kind.

    Args:
        x: the value to check.
        name: the argument's name, for the message.
        fn: the calling function's name, for the message.
        ndim: required number of dimensions (an int or a tuple of allowed ints).
        min_ndim: required minimum number of dimensions.
        floating: require a floating-point dtype (images must be float, not uint8/long).
        like: a human description of the expected shape, e.g. ``"(B, C, H, W)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(
            f"{fn}: `{name}` must be a floating-point tensor, got dtype {x.dtype} "
            "(convert integer images with .float(), scaled to the range the model was trained on)"
        )
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    hint = f" {like}" if like else ""
    if allowed is not None and x.dim() not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(f"{fn}: `{name}` must have {want} dimensions{hint}, got shape {_shape(x)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(
            f"{fn}: `{name}` must have at least {min_ndim} dimensions{hint}, got shape {_shape(x)}"
        )
    return x


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], fn: str) -> None:
    """Raise ``ValueError`` unless two tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: `{names[0]}` and `{names[1]}` must have the same shape, "
            f"got {_shape(a)} and {_shape(b)}"
        )


def check_int(value, name: str, fn: str, *, minimum: int | None = 1) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: `{name}` must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    value, name: str, fn: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """Return ``value`` as a finite float, optionally required > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: `{name}` must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{fn}: `{name}` must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{fn}: `{name}` must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{fn}: `{name}` must be >= 0, got {value}")
    return value


def check_choice(value, name: str, fn: str, choices) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fn}: `{name}` must be one of {options}, got {value!r}")
    return value


def check_labels(labels, n: int, fn: str, *, num_classes: int | None = None, name: str = "labels"):
    """Return integer class labels of shape (n,) after checking dtype, length and range."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{fn}: `{name}` must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{fn}: `{name}` must have shape ({n},), got {_shape(labels)}")
    if n and labels.min() < 0:
        raise ValueError(f"{fn}: `{name}` must be >= 0, got min {int(labels.min())}")
    if num_classes is not None and n and labels.max() >= num_classes:
        raise ValueError(
            f"{fn}: `{name}` must be < {num_classes} (the number of classes), "
            f"got max {int(labels.max())}"
        )
    return labels.long()


def as_target(target, batch_size: int, fn: str, *, num_classes: int | None = None, device=None):
    """Turn an int or a LongTensor of shape (B,) into a LongTensor of shape (B,) on ``device``."""
    if isinstance(target, bool):
        raise TypeError(f"{fn}: `target` must be an int or a LongTensor of shape (B,), got bool")
    if isinstance(target, numbers.Integral):
        if target < 0 or (num_classes is not None and target >= num_classes):
            bound = f" and < {num_classes}" if num_classes is not None else ""
            raise ValueError(f"{fn}: `target` must be >= 0{bound}, got {target}")
        return torch.full((batch_size,), int(target), dtype=torch.long, device=device)
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"{fn}: `target` must be an int or a LongTensor of shape (B,), "
            f"got {type(target).__name__}"
        )
    if target.dim() == 0:
        return as_target(int(target), batch_size, fn, num_classes=num_classes, device=device)
    labels = check_labels(target, batch_size, fn, num_classes=num_classes, name="target")
    return labels.to(device) if device is not None else labels


def model_device(model: nn.Module) -> torch.device:
    """Return the device of a model's first parameter or buffer (cpu for an empty model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def check_module(model, fn: str, name: str = "model") -> nn.Module:
    """Raise ``TypeError`` unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: `{name}` must be a torch.nn.Module, got {type(model).__name__}")
    return model
