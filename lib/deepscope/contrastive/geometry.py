"""Geometry of embeddings on the sphere: alignment, uniformity, spectra, ranks, collapse.

- `alignment` and `uniformity` are the two properties Wang & Isola (2020) show the contrastive
  loss optimises: positive pairs close together, all features spread over the sphere. Both
  L2-normalise the features inside; lower is better for both.
- `effective_rank` (Roy & Vetterli 2007) and `singular_spectrum` (Jing et al. 2022) measure how
  many directions the embeddings use: dimensional collapse shows as a spectrum that falls to
  zero and an effective rank far below the dimension.
- `collapse_indicator` is SimSiam's collapse monitor (Chen & He 2021, sec. 4.1): the per-dimension
  standard deviation of the normalised outputs times sqrt(D), about 1 when the outputs spread
  like a Gaussian and 0 when every input maps to the same point.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_finite, check_float, check_int, check_like, check_nonempty
from .losses import check_embeddings


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Return the alignment loss E ||f(x) - f(y)||^alpha over positive pairs (Wang & Isola 2020,
    eq. 4), with f L2-normalised: 0 for identical pairs, at most 2^alpha.

    Args:
        z1, z2: embeddings of the two views, shape (N, D); row i of each is a positive pair.
        alpha: exponent > 0 (2 in the paper's experiments).

    Returns:
        A 0-dim tensor (differentiable).
    """
    fn = "alignment"
    check_embeddings(z1, "z1", fn)
    check_embeddings(z2, "z2", fn)
    if z1.shape != z2.shape:
        raise ValueError(f"{fn}: `z1` and `z2` must have the same shape (N, D), got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    check_like(z2, z1, "z2", fn, "z1")
    alpha = check_float(alpha, "alpha", fn, positive=True)
    return (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2.0, *, batch_size: int = 4096) -> torch.Tensor:
    """Return the uniformity loss log E_{i<j} exp(-t ||f_i - f_j||^2) (Wang & Isola 2020, eq. 5).

    Features are L2-normalised inside; the mean runs over all N(N-1)/2 pairs of distinct rows
    (pairs within one view). The value is 0 for collapsed features and falls as they spread;
    for points uniform on the circle it tends to -4 + log I_0(4) = -1.5750 (t = 2), on S^511 to
    about -3.98 (see `uniform_sphere_uniformity`). Computed in blocks of ``batch_size`` rows with
    a log-sum-exp, so memory is O(batch_size * N).

    Args:
        z: embeddings (N, D), N >= 2.
        t: the kernel's scale t > 0.
        batch_size: rows per block.

    Returns:
        A 0-dim tensor (differentiable).
    """
    fn = "uniformity"
    check_embeddings(z, "z", fn, min_rows=2)
    t = check_float(t, "t", fn, positive=True)
    batch_size = check_int(batch_size, "batch_size", fn)
    z = F.normalize(z, dim=1)
    n = len(z)
    columns = torch.arange(n, device=z.device)
    blocks = []
    for start in range(0, n - 1, batch_size):
        rows = z[start : start + batch_size]
        squared = (2 - 2 * rows @ z.T).clamp_min(0)  # ||a - b||^2 of unit vectors
        upper = columns[None, :] > (start + torch.arange(len(rows), device=z.device))[:, None]
        blocks.append(torch.logsumexp((-t * squared).masked_fill(~upper, float("-inf")).flatten(),
                                      dim=0))
    pairs = n * (n - 1) / 2
    return torch.logsumexp(torch.stack(blocks), dim=0) - math.log(pairs)


def uniform_sphere_uniformity(dim: int, t: float = 2.0) -> float:
    """Return log E exp(-t ||x - y||^2) for x, y independent and uniform on S^(dim-1).

    With s = x.y, ||x - y||^2 = 2 - 2s, and E exp(2t s) = 0F1(; d/2; t^2) (the normaliser of the
    von Mises-Fisher distribution, Gamma(d/2) (k/2)^(1-d/2) I_(d/2-1)(k) with k = 2t), so the
    value is -2t + log 0F1(; d/2; t^2). It is what `uniformity` approaches for many uniform
    points: -4 + log I_0(4) = -1.5750 on the circle (d = 2, t = 2), about -3.984 on S^511.

    Args:
        dim: the ambient dimension d >= 1 (the sphere S^(d-1) lives in R^d).
        t: the kernel's scale t > 0.
    """
    from scipy.special import hyp0f1

    fn = "uniform_sphere_uniformity"
    dim = check_int(dim, "dim", fn)
    t = check_float(t, "t", fn, positive=True)
    log_mgf = math.log(hyp0f1(dim / 2, t * t))
    return float(-2 * t + log_mgf)


def _svd_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float32 if z.device.type == "mps" else torch.float64


def effective_rank(z: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """Return the effective rank exp(H(p)), p = sigma / sum(sigma) (Roy & Vetterli 2007).

    sigma are the singular values of ``z`` as given (RankMe, Garrido et al. 2023, does the same),
    H the Shannon entropy with 0 log 0 = 0. It lies between 1 and min(N, D), equals r for r equal
    non-zero singular values and is at most r for rank-r data. With ``center`` the mean row is
    subtracted first, so a large common offset (e.g. of non-negative ReLU features) does not
    count as a direction; then sigma^2 / N is the spectrum `singular_spectrum` returns. Computed
    in float64 (float32 on MPS).

    Args:
        z: a matrix (N, D), for example N embeddings of size D; not all zero (after centring).
        center: subtract the mean row first (default False: ``z`` as given).

    Returns:
        A 0-dim tensor (float64, on the device of ``z``).
    """
    fn = "effective_rank"
    check_embeddings(z, "z", fn)
    z = z.detach().to(_svd_dtype(z))
    if center:
        z = z - z.mean(0, keepdim=True)
    sigma = torch.linalg.svdvals(z)
    total = sigma.sum()
    if not bool(total > 0):
        raise ValueError(f"{fn}: `z` must have a non-zero singular value, got an all-zero matrix "
                         f"of shape {tuple(z.shape)}{' after centring' if center else ''}")
    p = sigma / total
    return torch.exp(-torch.special.xlogy(p, p).sum())


def singular_spectrum(z: torch.Tensor, *, center: bool = True) -> torch.Tensor:
    """Return the singular values of the embeddings' covariance matrix, largest first.

    C = (1/N) sum_i (z_i - mean)(z_i - mean)^T (D x D); Jing et al. (2022, fig. 2) plot the log of
    its singular values: dimensional collapse shows as values that drop to ~0 after a few
    dimensions. Computed in float64 (float32 on MPS).

    Args:
        z: embeddings (N, D), N >= 2.
        center: subtract the mean embedding first (False: the second-moment matrix).

    Returns:
        A tensor of shape (D,), descending, non-negative.
    """
    fn = "singular_spectrum"
    check_embeddings(z, "z", fn, min_rows=2)
    z = z.detach().to(_svd_dtype(z))
    if center:
        z = z - z.mean(0, keepdim=True)
    return torch.linalg.svdvals(z.T @ z / len(z))


def collapse_indicator(z: torch.Tensor) -> torch.Tensor:
    """Return std(z / ||z||) * sqrt(D), the collapse indicator of SimSiam (Chen & He 2021).

    The standard deviation is taken over the N examples for each of the D dimensions and averaged
    over dimensions. Outputs spread like an isotropic Gaussian give about 1; outputs that all
    point the same way (complete collapse) give 0.

    Args:
        z: embeddings (N, D), N >= 2.

    Returns:
        A 0-dim tensor.
    """
    check_embeddings(z, "z", "collapse_indicator", min_rows=2)
    return F.normalize(z, dim=1).std(dim=0).mean() * math.sqrt(z.shape[1])


def circle_points(angles) -> torch.Tensor:
    """Return the unit vectors (cos a, sin a) of angles in radians: shape (K,) -> (K, 2)."""
    angles = torch.as_tensor(angles, dtype=torch.float32)
    if angles.dim() != 1:
        raise ValueError(f"circle_points: `angles` must have shape (K,), got "
                         f"{tuple(angles.shape)}")
    check_finite(check_nonempty(angles, "angles", "circle_points", "angle"), "angles",
                 "circle_points")
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def circle_toy(n_negatives: int = 32, *, positive_angle: float = 0.35, seed: int = 0):
    """Return the toy of the temperature explorer: an anchor at angle 0 on the unit circle, a
    positive at ``positive_angle`` radians and ``n_negatives`` negatives at uniformly random
    angles (seeded). Shapes: (2,), (2,), (K, 2)."""
    fn = "circle_toy"
    n_negatives = check_int(n_negatives, "n_negatives", fn)
    positive_angle = check_float(positive_angle, "positive_angle", fn)
    angles = np.random.default_rng(seed).uniform(-np.pi, np.pi, n_negatives)
    points = circle_points([0.0, positive_angle, *angles])
    return points[0], points[1], points[2:]
