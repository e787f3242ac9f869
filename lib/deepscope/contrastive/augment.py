"""Augmentations for small digit images: shifts, crops, small rotations and noise.

A contrastive method learns what its augmentations leave unchanged (Chen et al. 2020, sec. 3):
two random views of the same digit must map close together. For 8x8 digits the natural
invariances are small: a pixel of shift, a mild zoom (a random crop resized back to full size),
a few degrees of rotation and a little pixel noise.

Every image of a batch gets its own random similarity transform, applied in one batched
``affine_grid`` / ``grid_sample`` call on the images' device (no per-image loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_float, check_nonempty, check_tensor

__all__ = ["affine_digits", "augment_digits", "two_views"]


def _per_image(value, name: str, batch: int, x: torch.Tensor, fn: str) -> torch.Tensor:
    """Broadcast a float or a tensor of shape (B,) / (B, 2) to a float tensor on ``x``'s device."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.dim() == 0:
        return value.expand(batch)
    if value.shape[0] != batch:
        raise ValueError(f"{fn}: `{name}` must be a number or have {batch} rows (one per image), "
                         f"got shape {tuple(value.shape)}")
    return value


def affine_digits(
    x: torch.Tensor, *, angle=0.0, scale=1.0, shift=(0.0, 0.0)
) -> torch.Tensor:
    """Rotate, zoom and shift each image of a batch (bilinear resampling, zero outside).

    The output pixel at position q shows the input at  scale * R(angle) q + shift  (in pixels
    from the centre), so ``scale`` < 1 zooms in: the output shows a crop of side ``scale`` times
    the image, resized to full size. Identity parameters return ``x`` (up to rounding).

    Args:
        x: images (B, C, H, W), float.
        angle: rotation in degrees, a number or a tensor (B,).
        scale: zoom factor > 0, a number or a tensor (B,).
        shift: (dx, dy) in pixels (positive dx shows content further right, i.e. moves the image
            left), a pair or a tensor (B, 2).

    Returns:
        Images of the shape of ``x``.
    """
    fn = "affine_digits"
    check_tensor(x, "x", fn, ndim=4, like="(B, C, H, W)")
    check_finite(check_nonempty(x, "x", fn, "image"), "x", fn)
    b, _, h, w = x.shape
    radians = _per_image(angle, "angle", b, x, fn) * (math.pi / 180)
    scale = _per_image(scale, "scale", b, x, fn)
    if bool((scale <= 0).any()):
        raise ValueError(f"{fn}: `scale` must be > 0, got min {float(scale.min())}")
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    if shift.shape == (2,):
        shift = shift.expand(b, 2)
    if shift.shape != (b, 2):
        raise ValueError(f"{fn}: `shift` must be a pair (dx, dy) or have shape ({b}, 2), got "
                         f"shape {tuple(shift.shape)}")
    cos, sin = torch.cos(radians) * scale, torch.sin(radians) * scale
    # affine_grid works in normalised coordinates [-1, 1]; one pixel is 2/W wide, 2/H high.
    # Rotation is done in pixel units so it is a true rotation on non-square images.
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, shift[:, 0] * 2 / w], dim=1),
        torch.stack([sin * w / h, cos, shift[:, 1] * 2 / h], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(low: float, high: float, n: int, x: torch.Tensor, generator) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    u = torch.rand(n, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return low + (high - low) * u


def augment_digits(
    x: torch.Tensor,
    *,
    max_shift: float = 1.0,
    max_rotation: float = 15.0,
    min_scale: float = 0.8,
    noise: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return one random view of each image: shift, crop-and-resize, rotation, then noise.

    Per image: a shift drawn uniformly in [-max_shift, max_shift] pixels on each axis, a zoom
    ``scale`` uniform in [min_scale, 1] (a random crop of that relative side, resized back), a
    rotation uniform in [-max_rotation, max_rotation] degrees (`affine_digits`), then Gaussian
    pixel noise of standard deviation ``noise``; values are clipped to [0, 1].

    Args:
        x: images (B, C, H, W), float in [0, 1].
        max_shift: largest shift in pixels (>= 0).
        max_rotation: largest rotation in degrees (>= 0).
        min_scale: smallest zoom factor, in (0, 1] (1: no crops).
        noise: standard deviation of the pixel noise (>= 0).
        generator: a torch.Generator for reproducible views (None: torch's global generator).

    Returns:
        Images of the shape of ``x``, on its device.
    """
    fn = "augment_digits"
    check_tensor(x, "x", fn, ndim=4, like="(B, C, H, W)")
    check_finite(check_nonempty(x, "x", fn, "image"), "x", fn)
    max_shift = check_float(max_shift, "max_shift", fn, nonnegative=True)
    max_rotation = check_float(max_rotation, "max_rotation", fn, nonnegative=True)
    min_scale = check_float(min_scale, "min_scale", fn, positive=True)
    if min_scale > 1:
        raise ValueError(f"{fn}: `min_scale` must be in (0, 1], got {min_scale}")
    noise = check_float(noise, "noise", fn, nonnegative=True)
    b = len(x)
    shift = torch.stack([_uniform(-max_shift, max_shift, b, x, generator),
                         _uniform(-max_shift, max_shift, b, x, generator)], dim=1)
    out = affine_digits(
        x,
        angle=_uniform(-max_rotation, max_rotation, b, x, generator),
        scale=_uniform(min_scale, 1.0, b, x, generator),
        shift=shift,
    )
    if noise > 0:
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
        out = out + noise * eps.to(x.device)
    return out.clamp(0.0, 1.0)


def two_views(x: torch.Tensor, **augment_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Return two independent random views (`augment_digits`) of a batch: a positive pair per
    image. Shapes (B, C, H, W) -> two tensors of that shape."""
    return augment_digits(x, **augment_kwargs), augment_digits(x, **augment_kwargs)
