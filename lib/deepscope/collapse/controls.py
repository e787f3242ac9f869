"""Tests that a collapse claim can fail, and the baselines the notebooks compare against.

- `worst_equiangularity`: the largest |cos + 1/(C-1)| over pairs of vectors. The *mean cosine*
  of centred, equal-norm vectors is -1/(C-1) by construction (the rows sum to zero), so it is a
  sanity check and never evidence of a simplex ETF; the worst pair is.
- `plane_regularity`: how regular the C-gon looks in `etf_plane`. Random means in high
  dimension are nearly orthogonal, so after centring they are already close to a simplex ETF
  and look almost regular in that plane: the picture alone does not certify collapse.
- `nearest_centre_accuracy`: few-shot nearest-class-centre accuracy on any features (raw pixels
  included), the transfer test of Galanti et al. (2022).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int, check_labels, check_tensor
from .etf import etf_plane
from .metrics import _cosines

__all__ = ["worst_equiangularity", "PlaneRegularity", "plane_regularity",
           "nearest_centre_accuracy"]


def worst_equiangularity(vectors: torch.Tensor) -> float:
    """Return max over pairs c != c' of |cos(v_c, v_c') + 1/(C-1)| for the rows of (C, d).

    The strict form of NC2's angle criterion (Papyan et al. 2020, Figure 4 plots the mean and the
    std of the same quantity): 0 only when every pair has the simplex ETF's cosine.
    """
    cos = _cosines(vectors, "worst_equiangularity")
    c = cos.shape[0]
    off_diagonal = ~torch.eye(c, dtype=torch.bool, device=cos.device)
    return float((cos[off_diagonal] + 1 / (c - 1)).abs().max())


class PlaneRegularity(NamedTuple):
    """`plane_regularity` result: worst angle error (degrees) and radius spread (std/mean)."""

    angle_error: float
    radius_spread: float


def plane_regularity(means: torch.Tensor) -> PlaneRegularity:
    """Measure how far the class means, drawn in `etf_plane`, are from a regular C-gon.

    The centred means (C, d) are projected on the plane of `etf_plane`; ``angle_error`` is the
    largest deviation, in degrees, of the angle from class c to class c+1 (in class order, as a
    regular polygon would have it, each step taken in (-180, 180]) from 360/C;
    ``radius_spread`` is the std/mean of the projected radii. Both are 0 for a simplex ETF.

    Args:
        means: class means (C, d), C >= 3.

    Returns:
        `PlaneRegularity` (angle_error, radius_spread).
    """
    fn = "plane_regularity"
    check_tensor(means, "means", fn, ndim=2, like="(C, d)")
    c = means.shape[0]
    if c < 3:
        raise ValueError(f"{fn}: `means` must hold at least 3 class means, got {c}")
    m = means.to(torch.float64)
    centred = m - m.mean(0, keepdim=True)
    points = centred @ etf_plane(m)
    angles = torch.atan2(points[:, 1], points[:, 0])
    # signed step from class c to class c+1, wrapped into (-pi, pi]: a step backwards (classes
    # out of order) counts as a large error, not as a step of almost a full turn
    steps = math.pi - torch.remainder(math.pi - (angles.roll(-1) - angles), 2 * math.pi)
    angle_error = float((steps - 2 * math.pi / c).abs().max()) * 180 / math.pi
    radii = points.norm(dim=1)
    return PlaneRegularity(angle_error=angle_error, radius_spread=float(radii.std() / radii.mean()))


class _Labelled(NamedTuple):
    features: torch.Tensor
    labels: np.ndarray


def _labelled(features, labels, name, fn) -> _Labelled:
    check_tensor(features, f"{name}_features", fn, ndim=2, like="(N, d)")
    y = check_labels(labels, len(features), fn, name=f"{name}_labels")
    return _Labelled(features.detach().to(torch.float64).cpu(), y.cpu().numpy())


def nearest_centre_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    shots: int = 5,
    draws: int = 20,
    seed: int = 0,
) -> float:
    """Return the mean accuracy of a ``shots``-shot nearest-class-centre rule over ``draws``.

    Each draw picks ``shots`` training samples of every class present in ``test_labels`` (numpy
    generator seeded by ``seed``), averages their features into class centres and assigns each
    test sample to the nearest centre (Euclidean). This is the few-shot transfer measurement of
    Galanti et al. (2022, sec. 4); with raw pixels as features it is the no-learning baseline.

    Args:
        train_features: (N, d) features of the labelled pool; train_labels: (N,) integers.
        test_features: (M, d) features to classify; test_labels: (M,) integers, each class
            with at least ``shots`` samples in the pool.
        shots: labelled samples per class (>= 1); draws: repetitions (>= 1); seed: >= 0.

    Returns:
        The accuracy averaged over draws, in [0, 1].
    """
    fn = "nearest_centre_accuracy"
    pool = _labelled(train_features, train_labels, "train", fn)
    query = _labelled(test_features, test_labels, "test", fn)
    if pool.features.shape[1] != query.features.shape[1]:
        raise ValueError(f"{fn}: `train_features` and `test_features` must have the same number "
                         f"of columns, got {pool.features.shape[1]} and {query.features.shape[1]}")
    shots = check_int(shots, "shots", fn)
    draws = check_int(draws, "draws", fn)
    rng = np.random.default_rng(check_int(seed, "seed", fn, minimum=0))
    classes = np.unique(query.labels)
    members = [np.flatnonzero(pool.labels == c) for c in classes]
    for c, idx in zip(classes, members):
        if len(idx) < shots:
            raise ValueError(f"{fn}: class {int(c)} has {len(idx)} training samples, fewer than "
                             f"`shots` = {shots}")
    truth = torch.as_tensor(np.searchsorted(classes, query.labels))
    accuracies = []
    for _ in range(draws):
        centres = torch.stack([pool.features[rng.choice(idx, shots, replace=False)].mean(0)
                               for idx in members])
        nearest = torch.cdist(query.features, centres).argmin(1)
        accuracies.append(float((nearest == truth).double().mean()))
    return float(np.mean(accuracies))
