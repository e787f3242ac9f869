"""Occlusion: slide a patch of baseline values over the input and record how the score drops
(Zeiler & Fergus 2014). A perturbation method: no gradients, only forward passes.
"""

from __future__ import annotations

import math
import numbers

import torch
from tqdm.auto import tqdm

from .._checks import check_int
from .._guards import eval_mode
from ._core import check_batch_size, check_inputs, resolve_baseline, rows_per_pass, target_scores

__all__ = ["occlusion", "occlusion_windows"]


def _as_shape(value, name, features, fn):
    """Expand an int or tuple over the feature dims; a tuple may omit the channel dim."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * (len(features) - (1 if len(features) > 1 else 0))
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{fn}: `{name}` must be an int or a tuple of ints, "
                        f"got {type(value).__name__}")
    value = tuple(check_int(v, name, fn) for v in value)
    if len(features) > 1 and len(value) == len(features) - 1:
        value = (features[0] if name == "window" else 1, *value)  # every channel at once
    if len(value) != len(features):
        raise ValueError(f"{fn}: `{name}` must have {len(features) - 1} (spatial) or "
                         f"{len(features)} (with channels) entries for inputs of shape "
                         f"(B, {', '.join(map(str, features))}), got {value}")
    return value


def occlusion_windows(features, window, stride, fn: str = "occlusion_windows"):
    """Return, per feature dim, the window starts (Captum's rule): ceil((D - w)/s) + 1 positions
    k*s, the last ones cropped at the border, so every feature is covered at least once."""
    window = _as_shape(window, "window", features, fn)
    stride = _as_shape(stride, "stride", features, fn)
    starts = []
    for size, w, s in zip(features, window, stride):
        if w > size:
            raise ValueError(f"{fn}: `window` {window} must fit in the input {tuple(features)}")
        if s > w and w < size:
            raise ValueError(f"{fn}: `stride` {stride} must not exceed `window` {window} (some "
                             "features would never be occluded)")
        starts.append(torch.arange(math.ceil((size - w) / s) + 1) * s)
    return window, starts


def occlusion(
    model,
    x: torch.Tensor,
    target,
    window,
    stride=1,
    baseline=0.0,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    output=None,
) -> torch.Tensor:
    """Return occlusion attributions: per feature, the mean score drop f(x) - f(x occluded) over
    every window position that covers it (Zeiler & Fergus 2014; Captum's ``Occlusion`` rule).

    Args:
        model, x, target: as `deepscope.saliency.gradient`; x (B, C, H, W) or any (B, ...).
        window: patch size: an int (every spatial dim, all channels), a tuple over the spatial
            dims (all channels), or a tuple including the channel dim first.
        stride: step between window positions, same forms as ``window`` (default 1).
        baseline: value put in the window: a number, or a tensor of shape x.shape[1:] or x.shape.
        batch_size: most rows (window positions x images) per forward pass.
        progress: show a progress bar over passes.
        output: for a model returning a dict, a tuple or an object, picks the class scores:
            a key, an index or a function (see `deepscope._forward`); ``model`` may then be
            any callable forward, not only an ``nn.Module``.

    Returns:
        Attributions of the shape of ``x``.
    """
    fn = "occlusion"
    model, x, target, max_target = check_inputs(model, x, target, fn, output=output,
                                                adapt=True)
    batch_size = check_batch_size(batch_size, fn)
    features = tuple(x.shape[1:])
    window, starts = occlusion_windows(features, window, stride, fn)
    base = resolve_baseline(baseline, x, fn, allow_many=False)[0]  # (B|1, ...)
    grids = torch.meshgrid(*starts, indexing="ij")
    corners = torch.stack([g.reshape(-1) for g in grids], dim=1).to(x.device)  # (P, dims)
    ranges = [torch.arange(size, device=x.device) for size in features]
    images, copies = rows_per_pass(batch_size, len(x))
    step = len(corners) if copies < 0 else copies
    total = torch.zeros_like(x)
    counts = torch.zeros(features, device=x.device, dtype=x.dtype)
    bar = tqdm(total=len(corners) * -(-len(x) // images), desc=fn, disable=not progress,
               leave=False)
    with torch.no_grad(), eval_mode(model):
        for lo in range(0, len(x), images):
            xb, tb = x[lo:lo + images], target[lo:lo + images]
            bb = base if base.shape[0] == 1 else base[lo:lo + images]
            fx = target_scores(model, xb, tb, max_target, fn)
            for p in range(0, len(corners), step):
                corner = corners[p:p + step]
                mask = None
                for d, (r, w) in enumerate(zip(ranges, window)):
                    inside = (r >= corner[:, d:d + 1]) & (r < corner[:, d:d + 1] + w)
                    shape = [len(corner)] + [1] * len(features)
                    shape[d + 1] = features[d]
                    inside = inside.view(shape)
                    mask = inside if mask is None else mask & inside
                m = len(corner)
                occluded = torch.where(mask[:, None], bb[None], xb[None])  # (m, b, ...)
                scores = target_scores(model, occluded.reshape(m * len(xb), *features),
                                       tb.repeat(m), max_target, fn).reshape(m, len(xb))
                drop = (fx[None] - scores).view(m, len(xb), *([1] * len(features)))
                total[lo:lo + images] += (drop * mask[:, None]).sum(0)
                if lo == 0:
                    counts += mask.sum(0)
                bar.update(m)
    bar.close()
    return total / counts
