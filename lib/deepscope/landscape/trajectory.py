"""The directions a training run actually took: PCA of its trajectory in parameter space.

Random directions are almost orthogonal to the path of an optimiser in a space of thousands of
dimensions, so a random 2-D slice shows nothing of it. Li et al. (2018, section 7) instead take
the snapshots theta_0, ..., theta_n of a run, form the matrix of differences to the final point
M = [theta_i - theta_n], and plot the loss on the plane of its two principal directions; the
projections of the snapshots on that plane draw the path, and the explained variance says how
much of the motion the plane captures.

How much is "most"? Antognini & Sohl-Dickstein (2018, "PCA of high dimensional random walks
with comparison to neural network training") showed that a *random walk* already puts most of
its variance in its first components: for many steps in high dimension the k-th component
explains about 6 / (pi^2 k^2) of it, about 0.61 + 0.15 = 0.76 for the first two. The null to
compare a trajectory with is `random_walk_like`: a walk with the same number of snapshots and
the same step lengths, in random directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int
from ._core import Params, as_point, as_vector, check_point

__all__ = ["TrajectoryPCA", "trajectory_pca", "random_walk_like"]


@dataclass
class TrajectoryPCA:
    """`trajectory_pca` result.

    Attributes:
        directions: k dicts name -> tensor, orthonormal as flat vectors (the slice axes).
        coords: (T, k) coordinates of each snapshot minus the center along the directions.
        explained_variance_ratio: (k,) share of the trajectory's variance per direction.
        center: the origin of the plane (the final snapshot unless given).
    """

    directions: list[Params]
    coords: torch.Tensor
    explained_variance_ratio: torch.Tensor
    center: Params


def trajectory_pca(snapshots, *, center=None, k: int = 2) -> TrajectoryPCA:
    """Find the k principal directions of a training trajectory (Li et al. 2018, section 7).

    The rows theta_i - center are centred by their mean and decomposed by SVD, as
    ``sklearn.decomposition.PCA`` does; the right singular vectors are the directions.

    Args:
        snapshots: a list of T >= 2 dicts name -> tensor (e.g. `snapshot` after each epoch).
        center: the plane's origin, a dict or model (default: the last snapshot).
        k: number of directions (at most T - 1).

    Returns:
        A `TrajectoryPCA`; pass ``directions[0], directions[1]`` to `slice_2d` with the model
        at ``center`` and plot ``coords`` on top.
    """
    fn = "trajectory_pca"
    if not isinstance(snapshots, (list, tuple)) or len(snapshots) < 2:
        raise ValueError(f"{fn}: `snapshots` must be a list of at least 2 parameter dicts, "
                         f"got {type(snapshots).__name__} of length "
                         f"{len(snapshots) if hasattr(snapshots, '__len__') else '?'}")
    if not isinstance(snapshots[-1], dict):
        raise TypeError(f"{fn}: `snapshots` must hold dicts name -> tensor, "
                        f"got {type(snapshots[-1]).__name__}")
    reference = snapshots[-1]
    points = [check_point(s, reference, f"snapshots[{i}]", fn) for i, s in enumerate(snapshots)]
    origin = reference if center is None else check_point(center, reference, "center", fn)
    k = check_int(k, "k", fn)
    if k > len(points) - 1:
        raise ValueError(f"{fn}: `k` must be <= len(snapshots) - 1 = {len(points) - 1}, got {k}")
    base = as_vector(origin)
    M = torch.stack([as_vector(p) - base for p in points]).to(torch.float64)
    _, s, Vh = torch.linalg.svd(M - M.mean(0), full_matrices=False)
    V = Vh[:k]
    dtype = base.dtype
    ratio = (s[:k] ** 2 / (s**2).sum()).cpu()
    coords = (M @ V.T).cpu()
    directions = [{n: t.clone() for n, t in as_point(origin, v.to(dtype)).items()} for v in V]
    return TrajectoryPCA(directions, coords, ratio, dict(origin))


def random_walk_like(snapshots, *, seed: int = 0) -> list[Params]:
    """Return a random walk with the same start, number of steps and step lengths as a
    trajectory: the null model of trajectory PCA (Antognini & Sohl-Dickstein 2018).

    Step i of the walk has the length ||theta_{i+1} - theta_i|| of the trajectory's step i and a
    direction drawn uniformly on the sphere of the parameter space (a normalised Gaussian, in
    float64 on the CPU from a generator seeded with ``seed``; the global RNG is untouched).

    Args:
        snapshots: a list of T >= 2 dicts name -> tensor (e.g. `snapshot` after each epoch).
        seed: seed of the directions.

    Returns:
        A list of T dicts with the snapshots' names, shapes, dtypes and devices, starting at
        ``snapshots[0]``; pass it to `trajectory_pca` like the trajectory.
    """
    fn = "random_walk_like"
    if not isinstance(snapshots, (list, tuple)) or len(snapshots) < 2:
        raise ValueError(f"{fn}: `snapshots` must be a list of at least 2 parameter dicts, "
                         f"got {type(snapshots).__name__} of length "
                         f"{len(snapshots) if hasattr(snapshots, '__len__') else '?'}")
    if not isinstance(snapshots[0], dict):
        raise TypeError(f"{fn}: `snapshots` must hold dicts name -> tensor, "
                        f"got {type(snapshots[0]).__name__}")
    seed = check_int(seed, "seed", fn, minimum=0)
    reference = snapshots[0]
    points = [as_vector(check_point(s, reference, f"snapshots[{i}]", fn)).to("cpu",
                                                                         torch.float64)
              for i, s in enumerate(snapshots)]
    lengths = torch.stack([(b - a).norm() for a, b in zip(points[:-1], points[1:])])
    if not torch.isfinite(lengths).all():
        raise ValueError(f"{fn}: `snapshots` must hold finite parameters, got a non-finite step")
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randn(len(lengths), points[0].numel(), generator=generator,
                        dtype=torch.float64)
    steps = steps / steps.norm(dim=1, keepdim=True) * lengths[:, None]
    walk = torch.cat([points[0][None], points[0][None] + steps.cumsum(0)])
    template = as_vector(reference)
    return [{n: t.clone() for n, t in as_point(reference, w.to(template)).items()}
            for w in walk]
