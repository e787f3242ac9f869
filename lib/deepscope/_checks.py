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


# --------------------------------------------------------------------------------------------
# Values, devices and dtypes (DESIGN.md section 10: non-finite inputs, mismatched devices or
# dtypes raise by name)
#
# Device policy: deepscope computes where the model lives (without a model, where the first
# tensor argument lives) and never copies a model. Tensors that enter one computation together
# (images and a baseline, two views z1 and z2, features and a classifier's weight) must already
# be there; otherwise a ValueError names the argument and both devices. Integer labels and
# targets are moved to the device of what they index. Datasets (``data``/``train``/``test``
# pairs, DataLoaders, the inputs of batched feature extraction) may live elsewhere, typically
# on the CPU, and are moved one batch at a time. A ``meta`` tensor holds no values and is
# refused everywhere.


def _where(x: torch.Tensor) -> str:
    return str(x.device)


def check_finite(x, name: str, fn: str, hint: str = ""):
    """Return ``x`` after checking a floating tensor (or array) holds no NaN or inf.

    One reduction and one host sync per call: call it once at a function's entry, never in a
    loop. Integer and bool tensors are finite by construction.
    """
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return x
        check_not_meta(x, name, fn)
        finite = torch.isfinite(x)
        if bool(finite.all()):
            return x
        index = tuple(int(i) for i in (~finite).nonzero()[0])
        value = x[index].item()
        raise ValueError(f"{fn}: `{name}` must be finite, got {value} at index {index}"
                         + (f" ({hint})" if hint else ""))
    return x


def check_not_meta(x: torch.Tensor, name: str, fn: str) -> torch.Tensor:
    """Raise ``ValueError`` for a tensor on the ``meta`` device (shapes without values)."""
    if x.device.type == "meta":
        raise ValueError(f"{fn}: `{name}` is on the meta device, which holds no values; "
                         "materialise it on a real device first")
    return x


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """Return the dtype of a model's first floating-point parameter or buffer (None if none)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def check_on_device(x: torch.Tensor, device: torch.device, name: str, fn: str,
                    where: str = "the model") -> torch.Tensor:
    """Raise ``ValueError`` unless ``x`` is on ``device`` (naming the argument and both)."""
    check_not_meta(x, name, fn)
    device = torch.device(device)
    if x.device.type != device.type or (
            device.index is not None and x.device.index is not None
            and x.device.index != device.index):
        raise ValueError(f"{fn}: `{name}` is on {_where(x)} but {where} is on {device}; move it "
                         f"there with .to({str(device)!r}) (deepscope never moves a model)")
    return x


def check_dtype_matches(x: torch.Tensor, dtype: torch.dtype | None, name: str, fn: str,
                        where: str = "the model") -> torch.Tensor:
    """Raise ``TypeError`` if a floating ``x`` has another floating dtype than ``dtype``."""
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        raise TypeError(f"{fn}: `{name}` has dtype {x.dtype} but {where} has {dtype}; convert "
                        f"it with .to({dtype})")
    return x


def check_for_model(model: nn.Module, x, name: str, fn: str, *, finite: bool = True):
    """Check an input that enters ``model`` as it is: a tensor on the model's device, of the
    model's floating dtype, and (with ``finite``) free of NaN and inf. Returns ``x``."""
    check_tensor(x, name, fn, floating=False)
    check_not_meta(x, name, fn)
    if isinstance(model, nn.Module):  # a plain callable forward: no device or dtype to match
        check_on_device(x, model_device(model), name, fn)
        check_dtype_matches(x, model_dtype(model), name, fn)
    return check_finite(x, name, fn) if finite else x


def check_dataset(model: nn.Module | None, x, name: str, fn: str):
    """Check one tensor of a dataset that is moved batch by batch to the model: real values
    (not meta), finite, and of the model's floating dtype. Returns ``x``."""
    check_tensor(x, name, fn, floating=False)
    check_not_meta(x, name, fn)
    if model is not None:
        check_dtype_matches(x, model_dtype(model), name, fn)
    return check_finite(x, name, fn)


def check_together(fn: str, **tensors) -> None:
    """Raise unless the given floating tensors share one device and one dtype (the first one's),
    and hold no NaN or inf; None values are skipped. Integer tensors are checked for device
    only if they are not labels (pass labels separately)."""
    items = [(name, t) for name, t in tensors.items() if t is not None]
    if not items:
        return
    first_name, first = items[0]
    for name, t in items:
        check_not_meta(t, name, fn)
        if t is not first:
            check_on_device(t, first.device, name, fn, where=f"`{first_name}`")
            if first.is_floating_point():
                check_dtype_matches(t, first.dtype, name, fn, where=f"`{first_name}`")
    for name, t in items:
        check_finite(t, name, fn)


def check_nonempty(x, name: str, fn: str, what: str = "sample"):
    """Raise ``ValueError`` if a tensor or array has no rows."""
    if len(x) == 0:
        raise ValueError(f"{fn}: `{name}` must hold at least one {what}, got shape "
                         f"{tuple(x.shape)}")
    return x


def is_classification_loss(loss_fn) -> bool:
    """True for the losses whose integer targets are class indices: None (the library's default,
    cross-entropy), ``F.cross_entropy``, ``F.nll_loss`` and their module forms."""
    return loss_fn is None or loss_fn in (nn.functional.cross_entropy, nn.functional.nll_loss) \
        or isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))


def _model_classes(model: nn.Module, x: torch.Tensor) -> int | None:
    """Return C for a model that maps ``x`` to class scores (B, C), read from one forward pass
    of one sample in eval mode without gradients (the model is restored; a user's forward hooks
    see that one extra pass); None for other outputs."""
    from ._guards import eval_mode

    with torch.no_grad(), eval_mode(model):
        out = model(x[:1].to(model_device(model)))
    return out.shape[1] if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _class_bounds(model, x, low: int, high: int, name: str, fn: str) -> None:
    if low < 0:
        raise ValueError(f"{fn}: `{name}` must hold class labels >= 0, got {low}")
    classes = _model_classes(model, x)
    if classes is not None and high >= classes:
        raise ValueError(f"{fn}: `{name}` must hold class labels < {classes} (the model's "
                         f"number of outputs), got {high}")


def _is_labels(y) -> bool:
    return isinstance(y, torch.Tensor) and y.dim() == 1 and y.numel() > 0 and not (
        y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)


def check_targets_for_model(model: nn.Module, x: torch.Tensor, y, name: str, fn: str,
                            loss_fn=None) -> None:
    """Raise ``ValueError`` when integer class labels ``y`` (N,) (or a list of such tensors,
    one per batch) fall outside the classes of a model that returns class scores (B, C):
    negative, or >= C. Checked only for a classification loss (`is_classification_loss`): with
    another ``loss_fn``, integer targets may mean anything. One host read-back per tensor of
    labels, and one forward pass of one sample (`_model_classes`).
    """
    labels = [t for t in (y if isinstance(y, (list, tuple)) else [y]) if _is_labels(t)]
    if not labels or len(x) == 0 or not isinstance(model, nn.Module) or \
            not is_classification_loss(loss_fn):
        return
    bounds = [torch.stack([t.min(), t.max()]).tolist() for t in labels]
    _class_bounds(model, x, min(b[0] for b in bounds), max(b[1] for b in bounds), name, fn)


def check_data(model: nn.Module | None, batches, fn: str, names=("data x", "data y"),
               loss_fn=None) -> None:
    """Check a dataset given as (x, y) batches, with one host read-back per batch: real values
    (not meta), inputs of the model's floating dtype, finite inputs (and floating targets), and,
    for a classification ``loss_fn``, integer labels among the model's classes."""
    xname, yname = names
    module = model if isinstance(model, nn.Module) else None
    dtype = model_dtype(module) if module is not None else None
    classify = module is not None and is_classification_loss(loss_fn)
    low = high = None
    for x, y in batches:
        check_not_meta(x, xname, fn)
        check_not_meta(y, yname, fn)
        check_dtype_matches(x, dtype, xname, fn)
        floats = [(t, n) for t, n in ((x, xname), (y, yname))
                  if (t.is_floating_point() or t.is_complex()) and t.numel()]
        stats = [(~torch.isfinite(t)).sum() for t, _ in floats]
        labels = classify and _is_labels(y)
        if labels:
            stats += [y.min().to(torch.int64), y.max().to(torch.int64)]
        if not stats:
            continue
        values = torch.stack([v.to(stats[0].device) for v in stats]).tolist()  # one read-back
        for (t, n), bad in zip(floats, values):
            if bad:
                check_finite(t, n, fn)  # raises, naming the first bad entry
        if labels:
            low = values[-2] if low is None else min(low, values[-2])
            high = values[-1] if high is None else max(high, values[-1])
    if low is not None:
        _class_bounds(module, batches[0][0], low, high, yname, fn)


def check_like(t: torch.Tensor, ref: torch.Tensor, name: str, fn: str, ref_name: str = "x", *,
               dtype: bool = True) -> torch.Tensor:
    """Check a tensor that enters a computation with ``ref``: real values (not meta), on the
    device of ``ref``, of its floating dtype (with ``dtype``) and finite. Returns ``t``."""
    check_on_device(t, ref.device, name, fn, where=f"`{ref_name}`")
    if dtype and ref.is_floating_point():
        check_dtype_matches(t, ref.dtype, name, fn, where=f"`{ref_name}`")
    return check_finite(t, name, fn)
