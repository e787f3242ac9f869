"""The simplex equiangular tight frame (ETF), a classifier head fixed to it, and the ETF plane.

A simplex ETF of C unit vectors m_1, ..., m_C is the most spread-out arrangement of C directions
that sum to zero: every pair has the same cosine, -1/(C-1), the most negative common value. Its
Gram matrix is ``M M^T = C/(C-1) (I - 1 1^T / C)``; it needs ``dim >= C - 1`` dimensions.
Papyan, Han & Donoho (2020) found that the centred class means of a network trained past zero
error converge to such a frame (up to rotation and scale), and its last-layer classifier with them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_finite, check_float, check_int, check_tensor

__all__ = ["simplex_etf", "FixedETFHead", "fixed_etf_head", "etf_plane"]


def _helmert_basis(num_classes: int, dtype, device) -> torch.Tensor:
    """Return V of shape (C, C-1): orthonormal columns orthogonal to the all-ones vector.

    Column k (k = 1..C-1) is the Helmert contrast (1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1)).
    """
    c = num_classes
    v = torch.zeros(c, c - 1, dtype=dtype, device=device)
    for k in range(1, c):
        v[:k, k - 1] = 1.0
        v[k, k - 1] = -float(k)
        v[:, k - 1] /= math.sqrt(k * (k + 1))
    return v


def simplex_etf(
    num_classes: int,
    dim: int,
    *,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Return the C unit vectors of a simplex ETF in ``dim`` dimensions, one per row.

    The rows ``m_c`` satisfy ``|m_c| = 1``, ``<m_c, m_c'> = -1/(C-1)`` for ``c != c'`` and
    ``sum_c m_c = 0``, i.e. ``M M^T = C/(C-1) (I - 1 1^T / C)`` (Papyan et al. 2020, Definition 1).
    They are ``sqrt(C/(C-1)) V R^T`` with V the Helmert basis of the vectors orthogonal to the
    all-ones vector (C x (C-1)) and R a (dim x (C-1)) matrix with orthonormal columns: the first
    C-1 coordinate axes by default, a random orthonormal frame when ``seed`` is given.

    Args:
        num_classes: C >= 2.
        dim: the ambient dimension, >= C - 1.
        seed: None for the deterministic frame; an int for a random rotation of it.
        dtype, device: of the result.

    Returns:
        A tensor of shape (num_classes, dim).
    """
    fn = "simplex_etf"
    c = check_int(num_classes, "num_classes", fn, minimum=2)
    d = check_int(dim, "dim", fn)
    if d < c - 1:
        raise ValueError(
            f"{fn}: `dim` must be >= num_classes - 1 = {c - 1} (a simplex of {c} vertices spans "
            f"{c - 1} dimensions), got {d}"
        )
    v = _helmert_basis(c, torch.float64, "cpu")
    if seed is None:
        rotation = torch.eye(d, c - 1, dtype=torch.float64)
    else:
        generator = torch.Generator().manual_seed(check_int(seed, "seed", fn, minimum=0))
        gaussian = torch.randn(d, c - 1, generator=generator, dtype=torch.float64)
        rotation, _ = torch.linalg.qr(gaussian)
    m = math.sqrt(c / (c - 1)) * v @ rotation.T
    return m.to(dtype=dtype, device=device)


class FixedETFHead(nn.Module):
    """A linear classifier whose weight is a fixed (non-trainable) scaled simplex ETF.

    ``forward(h) = scale * h @ M^T`` with M = `simplex_etf` (num_classes, in_features), stored as
    a buffer so optimisers never touch it (Zhu et al. 2021, section 4; Yang et al. 2022). Maps
    features (B, in_features) to logits (B, num_classes). ``weight`` is ``scale * M`` and
    ``bias`` is None, so `collapse_metrics` reads it like an ``nn.Linear``.

    The frame is randomly rotated (``seed``, 0 by default) so that it spreads over all feature
    coordinates: features after a ReLU are nonnegative, and an ETF confined to the first C-1
    axes (``seed=None``) leaves some classes hard to reach from the nonnegative orthant.
    """

    def __init__(self, in_features: int, num_classes: int, *, scale: float = 1.0,
                 seed: int | None = 0):
        super().__init__()
        fn = "FixedETFHead"
        self.in_features = check_int(in_features, "in_features", fn)
        self.out_features = check_int(num_classes, "num_classes", fn, minimum=2)
        self.scale = check_float(scale, "scale", fn, positive=True)
        if self.in_features < self.out_features - 1:
            raise ValueError(
                f"{fn}: `in_features` must be >= num_classes - 1 = {self.out_features - 1} "
                f"(a simplex ETF of {self.out_features} classes needs that many dimensions), "
                f"got {self.in_features}"
            )
        etf = simplex_etf(self.out_features, self.in_features, seed=seed)
        self.register_buffer("weight", self.scale * etf)
        self.bias = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.in_features:
            raise ValueError(
                f"FixedETFHead: expected features of shape (B, {self.in_features}), "
                f"got {tuple(h.shape)}"
            )
        return h @ self.weight.T

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.out_features}, "
                f"scale={self.scale}")


def fixed_etf_head(in_features: int, num_classes: int, *, scale: float = 1.0,
                   seed: int | None = 0) -> FixedETFHead:
    """Build a `FixedETFHead`: a classifier (B, in_features) -> (B, num_classes) fixed to a
    simplex ETF scaled by ``scale`` (needs ``in_features >= num_classes - 1``)."""
    return FixedETFHead(in_features, num_classes, scale=scale, seed=seed)


def etf_plane(means: torch.Tensor) -> torch.Tensor:
    """Return an orthonormal basis (dim, 2) of the plane in which a simplex ETF looks regular.

    For centred class means ``M~`` (rows ``mu_c - mu_G``) the two directions are
    ``M~^T p`` with ``p_c = (cos 2 pi c / C, sin 2 pi c / C)``, orthonormalised. When the means
    form a simplex ETF these directions are orthogonal and equally long, and the projected means
    are the vertices of a regular C-gon in class order; before collapse the picture is irregular.
    For C = 2 the plane is spanned by the difference of the means and, when ``dim > 1``, any
    orthogonal axis.

    Args:
        means: class means (C, dim) (centred or not; they are centred on their average here).

    Returns:
        A (dim, 2) tensor with orthonormal columns (dtype and device of ``means``); for dim = 1
        a (1, 2) tensor whose second column is zero.
    """
    fn = "etf_plane"
    check_finite(check_tensor(means, "means", fn, ndim=2, like="(C, dim)"), "means", fn)
    c, d = means.shape
    if c < 2:
        raise ValueError(f"{fn}: `means` must hold at least 2 class means, got {c}")
    centred = means - means.mean(0, keepdim=True)
    angles = 2 * math.pi * torch.arange(c, dtype=means.dtype, device=means.device) / c
    if c == 2:
        polygon = torch.stack([torch.tensor([1.0, -1.0], dtype=means.dtype, device=means.device),
                               torch.zeros(2, dtype=means.dtype, device=means.device)], 1)
    else:
        polygon = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    directions = centred.T @ polygon  # (dim, 2)
    basis = torch.zeros(d, 2, dtype=means.dtype, device=means.device)
    first = directions[:, 0]
    norm = first.norm()
    if norm > 0:
        basis[:, 0] = first / norm
    else:
        basis[0, 0] = 1.0
    if d == 1:
        return basis
    second = directions[:, 1] - (basis[:, 0] @ directions[:, 1]) * basis[:, 0]
    if second.norm() <= 1e-12 * max(float(norm), 1.0):
        # C = 2 or degenerate means: complete with the coordinate axis least aligned with the first.
        axis = int(basis[:, 0].abs().argmin())
        second = torch.zeros(d, dtype=means.dtype, device=means.device)
        second[axis] = 1.0
        second = second - (basis[:, 0] @ second) * basis[:, 0]
    basis[:, 1] = second / second.norm()
    return basis
