"""Numbers read off slices: the curvature of a 1-D slice at its centre, and the local
(non-)convexity of a 2-D slice.

A picture of a slice invites a verdict ("flat", "chaotic"); these functions turn the verdict into
a measurement that a notebook can assert and compare with a control.

- `slice_curvature`: the second derivative at 0 of a 1-D slice L(theta + a d), from a quadratic
  fitted to the points with |a| <= ``width``. Along a unit direction d it is d^T H d, a Rayleigh
  quotient: it lies between the Hessian's extreme eigenvalues and reaches lambda_max only along
  the top eigenvector. Along a filter-normalised random direction it is a *weighted average* of
  the spectrum (weighted by the direction's filter scales), which is why random slices can miss
  a difference in lambda_max entirely.
- `slice_nonconvexity`: at every interior point of a 2-D slice the 2x2 Hessian from central
  differences and the ratio |lambda_min / lambda_max| of its eigenvalues, the map that Li, Xu,
  Taylor, Studer & Goldstein (2018, section 6, Fig. 7) use to show that deep networks without
  skip connections have chaotic, non-convex landscapes while residual networks look convex.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .slices import as_grid

__all__ = ["slice_curvature", "slice_nonconvexity", "Nonconvexity"]


def _values(losses, name: str, fn: str, ndim: int) -> np.ndarray:
    if isinstance(losses, torch.Tensor):
        values = losses.detach().to("cpu", torch.float64).numpy()
    else:
        values = np.asarray(losses, dtype=np.float64)
    if values.ndim != ndim:
        raise ValueError(f"{fn}: `{name}` must have {ndim} dimension(s), got shape "
                         f"{values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{fn}: `{name}` must be finite, got a non-finite loss")
    return values


def slice_curvature(alphas, losses, *, width: float | None = None) -> float:
    """Return the curvature at 0 of a 1-D slice: twice the quadratic coefficient of a
    least-squares fit L(a) ~ c0 + c1 a + c2 a^2 to the points with |a| <= ``width``.

    For a slice L(theta + a d) this estimates d^T H d (H the Hessian at the centre), the
    curvature in the slice's own coordinate a; divide by ||d||^2 for the Rayleigh quotient.

    Args:
        alphas: the slice's coordinates (n,), containing points on both sides of 0.
        losses: the losses (n,) at ``alphas`` (e.g. from `slice_1d`).
        width: half-width of the fitted window (default: a quarter of the larger of
            max |alpha|, so the quadratic term dominates).

    Returns:
        The curvature, a float.
    """
    fn = "slice_curvature"
    grid = as_grid(alphas, "alphas", fn).numpy()
    values = _values(losses, "losses", fn, 1)
    if len(values) != len(grid):
        raise ValueError(f"{fn}: `alphas` and `losses` must have the same length, got "
                         f"{len(grid)} and {len(values)}")
    width = float(np.abs(grid).max()) / 4 if width is None else float(width)
    if not width > 0:
        raise ValueError(f"{fn}: `width` must be > 0, got {width}")
    inside = np.abs(grid) <= width * (1 + 1e-9)
    if (grid[inside] < 0).sum() < 1 or (grid[inside] > 0).sum() < 1 or inside.sum() < 3:
        raise ValueError(f"{fn}: the window |alpha| <= {width:g} must hold at least 3 points, "
                         f"on both sides of 0; got {int(inside.sum())}")
    return float(2 * np.polyfit(grid[inside], values[inside], 2)[0])


class Nonconvexity(NamedTuple):
    """`slice_nonconvexity` result, on the interior grid (len(ys) - 2, len(xs) - 2)."""

    ratio: np.ndarray  # |lambda_min / lambda_max| of the 2x2 finite-difference Hessian
    negative: np.ndarray  # bool: lambda_min < 0 (the slice curves down in some direction)
    share_negative: float  # mean of ``negative``


def slice_nonconvexity(xs, ys, losses) -> Nonconvexity:
    """Return the local non-convexity of a 2-D slice (Li et al. 2018, Fig. 7).

    At every interior grid point the 2x2 Hessian [[L_xx, L_xy], [L_xy, L_yy]] of the slice is
    estimated by central differences; its eigenvalues lambda_min <= lambda_max give the ratio
    |lambda_min / lambda_max| (near 0: convex along the slice; near 1 with lambda_min < 0: a
    saddle of comparable curvatures) and whether lambda_min < 0.

    Args:
        xs, ys: evenly spaced coordinates (len(xs),), (len(ys),), at least 3 each.
        losses: the slice, shape (len(ys), len(xs)) as `slice_2d` returns it.

    Returns:
        `Nonconvexity` (ratio, negative, share_negative).
    """
    fn = "slice_nonconvexity"
    gx, gy = as_grid(xs, "xs", fn).numpy(), as_grid(ys, "ys", fn).numpy()
    L = _values(losses, "losses", fn, 2)
    if L.shape != (len(gy), len(gx)) or min(L.shape) < 3:
        raise ValueError(f"{fn}: `losses` must have shape (len(ys), len(xs)) = "
                         f"({len(gy)}, {len(gx)}) with both at least 3, got {L.shape}")
    hx, hy = np.diff(gx), np.diff(gy)
    if not (np.allclose(hx, hx[0]) and np.allclose(hy, hy[0])) or hx[0] <= 0 or hy[0] <= 0:
        raise ValueError(f"{fn}: `xs` and `ys` must be increasing and evenly spaced")
    hx, hy = hx[0], hy[0]
    Lxx = (L[1:-1, 2:] - 2 * L[1:-1, 1:-1] + L[1:-1, :-2]) / hx**2
    Lyy = (L[2:, 1:-1] - 2 * L[1:-1, 1:-1] + L[:-2, 1:-1]) / hy**2
    Lxy = (L[2:, 2:] - L[2:, :-2] - L[:-2, 2:] + L[:-2, :-2]) / (4 * hx * hy)
    mean, root = (Lxx + Lyy) / 2, np.sqrt(((Lxx - Lyy) / 2) ** 2 + Lxy**2)
    low, high = mean - root, mean + root
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(high != 0, np.abs(low / high), np.inf)
    negative = low < 0
    return Nonconvexity(ratio, negative, float(negative.mean()))
