"""Input checks of the scaling chapter: 1-D arrays of positive, finite numbers of equal length.

Messages follow the library's form: ``"<function>: `<argument>` must be ..., got ..."``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def as_array(
    x, name: str, fn: str, *, positive: bool = True, flat: bool = True
) -> np.ndarray:
    """Return ``x`` (a number, list, numpy array or torch tensor) as a float64 array after
    checking it is real, finite and (with ``positive``) > 0. With ``flat`` it must be a number or
    1-D and comes back 1-D; otherwise any shape is kept (for broadcasting)."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{fn}: `{name}` is on the meta device, which holds no values")
        x = x.detach().cpu().numpy()
    if isinstance(x, (bool, np.bool_)) or isinstance(x, str) or (
            isinstance(x, np.ndarray) and x.dtype.kind not in "biuf"):
        got = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{fn}: `{name}` must be an array of real numbers, got {got}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{fn}: `{name}` must be an array of real numbers, got {type(x).__name__}"
        ) from err
    if flat and arr.ndim > 1:
        raise ValueError(f"{fn}: `{name}` must be a number or a 1-D array, got shape {arr.shape}")
    if flat:
        arr = np.atleast_1d(arr)
    if arr.size == 0:
        raise ValueError(f"{fn}: `{name}` must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: `{name}` must be finite, got {arr[~np.isfinite(arr)][0]}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{fn}: `{name}` must be > 0, got {arr.min():g} (min)")
    return arr


def broadcastable(fn: str, **arrays: np.ndarray) -> tuple[int, ...]:
    """Return the broadcast shape of the named arrays; raise ``ValueError`` if there is none."""
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays.values()))
    except ValueError:
        given = ", ".join(f"`{k}` {a.shape}" for k, a in arrays.items())
        raise ValueError(f"{fn}: arrays must broadcast together, got shapes {given}") from None


def same_length(fn: str, **arrays: np.ndarray) -> int:
    """Return the common length of the named arrays; raise ``ValueError`` if they differ."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        given = ", ".join(f"`{k}` {v}" for k, v in lengths.items())
        raise ValueError(f"{fn}: arrays must have the same length, got {given}")
    return next(iter(lengths.values()))


def enough_points(n: int, n_params: int, fn: str) -> None:
    """Raise ``ValueError`` when fewer data points than free parameters are given."""
    if n < n_params:
        raise ValueError(
            f"{fn}: need at least {n_params} points to fit {n_params} parameters, got {n}"
        )


def check_delta(delta, fn: str) -> float:
    """Return the Huber threshold as a float > 0."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise TypeError(f"{fn}: `delta` must be a real number, got {type(delta).__name__}")
    delta = float(delta)
    if not np.isfinite(delta) or delta <= 0:
        raise ValueError(f"{fn}: `delta` must be a finite number > 0, got {delta}")
    return delta
